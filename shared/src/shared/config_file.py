"""Reading the YAML configuration file named by BROKER_CONFIG, with ``${VAR}`` substitution."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """Configuration is missing or invalid; the message names the offending setting."""


def substitute(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string of a parsed YAML tree; a missing variable is an error."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                where = f" (in {path})" if path else ""
                raise ConfigError(f"environment variable {name} is not set{where}")
            return environ[name]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [substitute(item, environ, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: substitute(item, environ, f"{path}.{key}" if path else str(key))
            for key, item in value.items()
        }
    return value


def read_config_file(path: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Load and substitute the YAML file; errors name the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"BROKER_CONFIG: cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"BROKER_CONFIG: {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"BROKER_CONFIG: {path} must hold a mapping at the top level")
    result: dict[str, Any] = substitute(data, environ)
    return result
