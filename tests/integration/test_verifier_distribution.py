"""The verifier as a resource server installs it: ``oidc-broker-verifier`` alone in a fresh
virtual environment (httpx2 and joserfc, none of the broker's database or queue libraries),
verifying a token of a real ``broker serve`` process over HTTP and rejecting a tampered one."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from shared.crypto.keyring import Keyring

from tests.conftest import ROOT
from tests.support.flows import login
from tests.support.jwts import claims_of
from tests.support.processes import dev_broker_process

pytestmark = pytest.mark.integration

# What resource servers must not get by installing the verifier (normalised distribution names).
BROKER_STACK = {
    "sqlalchemy",
    "psycopg",
    "psycopg-binary",
    "alembic",
    "arq",
    "redis",
    "oidc-broker-shared",
    "oidc-broker",
}

INSTALLED = """\
import importlib.metadata as metadata, importlib.util, json, re
names = sorted(re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in metadata.distributions())
requires = [re.split(r"[<>=!~ ;\\[]", r)[0] for r in metadata.requires("oidc-broker-verifier")]
print(json.dumps({
    "distributions": names,
    "requires": sorted(requires),
    "shared importable": importlib.util.find_spec("shared") is not None,
}))
"""

VERIFY = """\
import asyncio, json, sys
from oidc_broker_verifier import AccessTokenVerifier, TokenRejected

async def main(issuer, token, tampered):
    verifier = AccessTokenVerifier(issuer, audience=issuer)
    try:
        claims = await verifier.verify(token)
        try:
            await verifier.verify(tampered)
            rejected = None
        except TokenRejected as exc:
            rejected = str(exc)
    finally:
        await verifier.aclose()
    print(json.dumps({"claims": dict(claims), "tampered rejected": rejected}))

asyncio.run(main(*sys.argv[1:]))
"""


def _uv() -> str:
    """The uv that ``make env`` put beside this interpreter (or one on the PATH)."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    assert found, "uv is not installed: run `make env`"
    return found


def _run(args: list[str], cwd: Path) -> str:
    # Nothing of this checkout's environment leaks in: the venv's python runs isolated (-I).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{args[:3]}: {result.stdout}{result.stderr}"
    return result.stdout


def _venv_with_the_verifier(directory: Path) -> Path:
    """A new venv holding only ``verifier/`` (built as a wheel, not editable) and its deps."""
    uv, venv = _uv(), directory / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], directory)
    python = venv / "bin" / "python"
    _run(
        [uv, "pip", "install", "--quiet", "--python", str(python), str(ROOT / "verifier")],
        directory,
    )
    return python


@pytest.fixture
def broker_process(tmp_path: Path, database_url: str, keyring: Keyring) -> Iterator[str]:
    """``broker serve`` on a free port, with the dev provider and the public client ``web``."""
    with dev_broker_process(
        tmp_path, database_url=database_url, keyring=keyring, cwd=str(ROOT)
    ) as (issuer, _process):
        yield issuer


def _tampered(token: str) -> str:
    """The same header and signature over a payload naming another subject."""
    head, _, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


async def test_alone_in_a_fresh_venv_it_verifies_a_broker_token_and_rejects_a_tampered_one(
    tmp_path: Path, broker_process: str
):
    python = _venv_with_the_verifier(tmp_path)
    installed = json.loads(_run([str(python), "-I", "-c", INSTALLED], tmp_path))
    assert "oidc-broker-verifier" in installed["distributions"]
    assert installed["requires"] == ["httpx2", "joserfc"]
    assert BROKER_STACK.isdisjoint(installed["distributions"]), installed["distributions"]
    assert not installed["shared importable"]

    issuer = broker_process
    async with httpx2.AsyncClient(base_url=issuer) as broker:
        token = (await login(broker, provider="dev"))["access_token"]
    args = [str(python), "-I", "-c", VERIFY, issuer, token, _tampered(token)]
    outcome = json.loads(_run(args, tmp_path))
    assert outcome["claims"]["iss"] == issuer
    assert outcome["claims"]["client_id"] == "web"
    assert outcome["claims"]["sub"] != "someone-else"
    assert outcome["tampered rejected"] == "the signature is invalid"
