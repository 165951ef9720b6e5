"""``broker providers list|disable|enable|reset`` against the run's database (in this process;
one test runs the real console script): the way back when no admin can reach the admin API,
and the same switch the broker then follows at its next sign-in."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, PROVIDER_STATES, SESSIONS
from shared.runtime import Runtime
from sqlalchemy import delete, func, select

from tests.conftest import BROKER_ISSUER, ROOT, broker_settings
from tests.support.cli import run_broker_cli_here
from tests.support.flows import authorize, login, refresh
from tests.support.jwts import session_of
from tests.support.processes import cli_env, run_broker_cli
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

OPERATOR = "ops-bob"  # the login name the CLI runs under (getpass reads LOGNAME first)
PROVIDERS = ("corp", "partner", "dev", "retired")  # this module's configuration


@dataclass
class Setup:
    runtime: Runtime
    broker: httpx2.AsyncClient
    env: dict[str, str]
    audit_before: int  # the newest audit row before the test: its own rows come after

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``broker providers ARGS`` through the CLI's ``main`` in this process."""
        return await asyncio.to_thread(run_broker_cli_here, "providers", *args, env=self.env)

    async def console_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``broker providers ARGS`` as an operator runs it: the console script, a process."""
        return await asyncio.to_thread(run_broker_cli, "providers", *args, env=self.env, cwd=ROOT)


@pytest.fixture
async def setup(
    database_url: str, upstream_idp: str, keyring: Keyring, tmp_path: Path
) -> AsyncIterator[Setup]:
    """An in-process broker with ``corp``, ``partner`` (signed in through only here, so its
    sessions are this module's), ``dev`` and a YAML-disabled ``retired``, and a
    ``BROKER_CONFIG`` naming the same providers for the CLI."""
    config = tmp_path / "broker.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            issuer: {BROKER_ISSUER}
            providers:
              - id: corp
                type: oidc
                issuer: {upstream_idp}
                client_id: broker
                client_secret: broker-secret
              - id: partner
                type: oidc
                issuer: {upstream_idp}
                client_id: broker
                client_secret: broker-secret
              - id: dev
                type: dev
              - id: retired
                type: oidc
                issuer: {upstream_idp}
                client_id: old
                client_secret: old-secret
                disabled: true
            """
        ),
        encoding="utf-8",
    )
    env = cli_env(config, database_url=database_url, keyring=keyring, LOGNAME=OPERATOR)
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        providers=[
            {
                "id": "corp",
                "type": "oidc",
                "issuer": upstream_idp,
                "client_id": "broker",
                "client_secret": "broker-secret",
            },
            {
                "id": "partner",
                "type": "oidc",
                "issuer": upstream_idp,
                "client_id": "broker",
                "client_secret": "broker-secret",
            },
            {"id": "dev", "type": "dev"},
        ],
    )
    async with running_broker(settings) as (runtime, broker):
        async with runtime.engine.connect() as connection:
            newest = await connection.scalar(select(func.max(AUDIT_TABLE.c.id)))
        try:
            yield Setup(runtime, broker, env, int(newest or 0))
        finally:
            # The run's database is shared: a provider left switched off would fail others.
            async with runtime.engine.begin() as connection:
                await connection.execute(
                    delete(PROVIDER_STATES).where(PROVIDER_STATES.c.provider_id.in_(PROVIDERS))
                )


async def _overrides(setup: Setup) -> list[str]:
    """The providers of this module's configuration with a runtime override (other modules'
    providers share the run's database)."""
    async with setup.runtime.engine.connect() as connection:
        rows = await connection.scalars(
            select(PROVIDER_STATES.c.provider_id).where(
                PROVIDER_STATES.c.provider_id.in_(PROVIDERS)
            )
        )
        return list(rows)


async def _actions(setup: Setup) -> list[tuple[str, str, str | None]]:
    async with setup.runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE.c.action, AUDIT_TABLE.c.actor, AUDIT_TABLE.c.data)
            .where(AUDIT_TABLE.c.action.like("provider.%"), AUDIT_TABLE.c.id > setup.audit_before)
            .order_by(AUDIT_TABLE.c.id)
        )
        return [(row.action, row.actor, row.data.get("reason")) for row in rows]


async def _new_upstream_user(idp: httpx2.AsyncClient) -> None:
    """The stand-in's next sign-ins are a person nobody has signed in as before."""
    subject = f"cli-{uuid.uuid4().hex[:10]}"
    await idp.post(
        "/_control/user",
        json={"sub": subject, "email": f"{subject}@corp.example", "email_verified": True},
    )


async def test_disable_stops_sign_ins_ends_sessions_and_enable_lets_them_in_again(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    await _new_upstream_user(idp)
    signed_in = await login(setup.broker, provider="partner")
    session_id = session_of(signed_in["access_token"])

    disabled = await setup.cli(
        "disable", "partner", "--reason", "upstream compromised", "--revoke-sessions"
    )

    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == "partner: disabled, from the runtime; 1 sessions revoked"
    refused = await authorize(setup.broker, provider="partner")
    assert refused.params["error"] == "temporarily_unavailable"
    stale = await refresh(setup.broker, signed_in["refresh_token"])
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
    async with setup.runtime.engine.connect() as connection:
        reason = await connection.scalar(
            select(SESSIONS.c.revoked_reason).where(SESSIONS.c.id == session_id)
        )
        assert reason == "provider_disabled"

    listed = await setup.cli("list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split("\t")[0]: line.split("\t")[1:] for line in listed.stdout.splitlines()}
    assert lines["partner"][:2] == ["disabled", "runtime"]
    assert lines["partner"][2].startswith(f"cli:{OPERATOR} at ")
    assert lines["partner"][2].endswith(": upstream compromised")
    assert lines["corp"] == lines["dev"] == ["enabled", "config"]
    assert lines["retired"] == ["disabled", "config"]

    enabled = await setup.cli("enable", "partner")
    assert enabled.returncode == 0, enabled.stderr
    assert (await login(setup.broker, provider="partner"))["refresh_token"]

    reset = await setup.cli("reset", "partner")
    assert reset.stdout.strip() == "partner: enabled, from the config"
    assert await _overrides(setup) == []
    assert await _actions(setup) == [
        ("provider.disabled", f"cli:{OPERATOR}", "upstream compromised"),
        ("provider.enabled", f"cli:{OPERATOR}", None),
        ("provider.enabled", f"cli:{OPERATOR}", None),
    ]


async def test_the_same_switch_twice_changes_nothing_the_second_time(setup: Setup) -> None:
    first = await setup.console_script("disable", "dev")
    second = await setup.console_script("disable", "dev")

    assert first.stdout.strip() == "dev: disabled, from the runtime"
    assert second.stdout.strip() == "dev: disabled, from the runtime (unchanged)"
    assert await _actions(setup) == [("provider.disabled", f"cli:{OPERATOR}", None)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("disable", "nobody"), "no provider 'nobody' is configured"),
        (("enable", "retired"), "disabled in the configuration (disabled: true)"),
        (("disable", "partner", "--reason", "two\nlines"), "one line"),
    ],
)
async def test_what_cannot_be_switched_exits_1_and_writes_nothing(
    setup: Setup, args: tuple[str, ...], message: str
) -> None:
    result = await setup.cli(*args)

    assert result.returncode == 1
    assert message in result.stderr
    assert await _overrides(setup) == []
    assert await _actions(setup) == []
