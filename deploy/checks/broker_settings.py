"""Would the broker start with this config file and environment? Asked of its own loader."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shared.config_file import ConfigError
from shared.crypto.keyring import Keyring
from shared.settings import load_settings

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def stand_in(name: str) -> str:
    """A well-formed value for a variable whose real value lives in a Secret."""
    if name == "BROKER_ENCRYPTION_KEYS":
        return str(Keyring.generate("check").serialize())
    if name == "BROKER_DATABASE_URL":
        return "postgresql+psycopg://check:check@postgres.invalid:5432/check"
    if name == "BROKER_REDIS_URL":
        return "redis://redis.invalid:6379/0"
    # Long enough for a client secret (the broker refuses one under 32 characters).
    return "check-deploy-stand-in-of-at-least-32-characters"


def settings_problem(config_text: str, environ: Mapping[str, str]) -> str | None:
    """Why the broker would refuse to start with this config and environment, or None."""
    missing = sorted(set(_VARIABLE.findall(config_text)) - set(environ))
    if missing:
        return f"the broker config uses ${{{missing[0]}}}, which the container does not set"
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as scratch:
        config = Path(scratch) / "broker.yaml"
        config.write_text(config_text, "utf-8")
        # var_dir in scratch: a loopback issuer without keys would write a dev keyring there.
        overrides = {"BROKER_CONFIG": str(config), "BROKER_VAR_DIR": scratch}
        try:
            load_settings({**environ, **overrides})
        except ConfigError as exc:
            return f"the broker would not start: {exc}"
    return None
