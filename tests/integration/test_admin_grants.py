"""``broker admins grant|revoke|list``: bootstrap admins in ``admin_grants``, run against the
run's database (in this process; one test runs the real console script), and what the admin
endpoints make of them."""

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
from shared.db.tables import ADMIN_GRANTS as GRANTS
from shared.db.tables import AUDIT_TABLE
from shared.runtime import Runtime
from sqlalchemy import func, select

from tests.conftest import BROKER_ISSUER, ROOT, broker_settings
from tests.support.accounts import CONSOLE, audit_rows, corp_profile, sign_in
from tests.support.cli import run_broker_cli_here
from tests.support.flows import login
from tests.support.processes import cli_env, run_broker_cli
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

OPERATOR = "ops-alice"  # the login name the CLI runs under (getpass reads LOGNAME first)


@dataclass
class Setup:
    runtime: Runtime
    broker: httpx2.AsyncClient
    env: dict[str, str]
    config_admin_subject: str
    unlinked_admin_subject: str
    config_user_id: uuid.UUID

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``broker admins ARGS`` through the CLI's ``main`` in this process."""
        return await asyncio.to_thread(run_broker_cli_here, "admins", *args, env=self.env)

    async def console_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``broker admins ARGS`` as an operator runs it: the console script, a process."""
        return await asyncio.to_thread(run_broker_cli, "admins", *args, env=self.env, cwd=ROOT)


@pytest.fixture
async def setup(
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
    idp: httpx2.AsyncClient,
    tmp_path: Path,
) -> AsyncIterator[Setup]:
    """An in-process broker and a ``BROKER_CONFIG`` for the CLI with the same ``admins:``: one
    ``corp:`` admin who signs in, one who never has, one ``user:`` id of nobody."""
    config_admin = f"admin-{uuid.uuid4().hex[:10]}"
    unlinked_admin = f"absent-{uuid.uuid4().hex[:10]}"
    config_user_id = uuid.uuid4()
    admins = [f"corp:{config_admin}", f"corp:{unlinked_admin}", f"user:{config_user_id}"]
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
              - id: dev
                type: dev
            admins: [{", ".join(admins)}]
            """
        ),
        encoding="utf-8",
    )
    env = cli_env(config, database_url=database_url, keyring=keyring, LOGNAME=OPERATOR)
    settings = broker_settings(database_url, upstream_idp, keyring, admins=admins)
    async with running_broker(settings) as (runtime, broker):
        yield Setup(runtime, broker, env, config_admin, unlinked_admin, config_user_id)


async def _admin_listing_status(setup: Setup, headers: dict[str, str]) -> int:
    return (await setup.broker.get("/admin/oauth2/users", headers=headers)).status_code


async def _admin_headers(setup: Setup) -> dict[str, str]:
    """The upstream's current user signs in again through the console, asking for admin."""
    tokens = await login(setup.broker, **CONSOLE)
    assert "admin" in tokens["scope"].split(), tokens["scope"]
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _written_counts(runtime: Runtime) -> tuple[int, int]:
    """Rows in ``admin_grants``, and ``admin.*`` audit rows."""
    async with runtime.engine.connect() as connection:
        grants = await connection.scalar(select(func.count()).select_from(GRANTS))
        audits = await connection.scalar(
            select(func.count())
            .select_from(AUDIT_TABLE)
            .where(AUDIT_TABLE.c.action.in_(("admin.granted", "admin.revoked")))
        )
    return int(grants or 0), int(audits or 0)


async def test_a_grant_by_user_id_makes_an_admin_and_a_revoke_takes_it_away(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    # Asked for the admin scope before being an admin: the token does not carry it.
    _subject, before_grant = await sign_in(setup.broker, idp, admin_scope=True)
    user_id = (await corp_profile(setup.broker, before_grant))["user"]["id"]
    assert await _admin_listing_status(setup, before_grant) == 403

    granted = await setup.cli("grant", user_id)
    assert granted.returncode == 0, granted.stderr
    assert f"granted admin to user {user_id}" in granted.stdout
    assert "a new sign-in through a client allowed the admin scope" in granted.stdout
    # The scope is granted at issue time: the old token stays without it; a new sign-in has it.
    assert await _admin_listing_status(setup, before_grant) == 403
    headers = await _admin_headers(setup)
    assert await _admin_listing_status(setup, headers) == 200

    again = await setup.cli("grant", f"user:{user_id}")
    assert again.returncode == 0, again.stderr
    assert "already an admin" in again.stdout and f"by cli:{OPERATOR}" in again.stdout

    (audit,) = await audit_rows(setup.runtime, user_id, "admin.granted")  # one, not two
    assert audit.actor == f"cli:{OPERATOR}"
    async with setup.runtime.engine.connect() as connection:
        grant = await connection.execute(select(GRANTS).where(GRANTS.c.user_id == audit.subject))
        assert grant.one().granted_by == f"cli:{OPERATOR}"

    revoked = await setup.cli("revoke", user_id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked the admin grant of user {user_id}" in revoked.stdout
    assert await _admin_listing_status(setup, headers) == 403
    (audit,) = await audit_rows(setup.runtime, user_id, "admin.revoked")
    assert audit.actor == f"cli:{OPERATOR}"

    # Revoking a user who has no grant changes nothing and says so (exit 0, like a second grant).
    twice = await setup.cli("revoke", user_id)
    assert twice.returncode == 0, twice.stderr
    assert "has no admin grant; nothing changed" in twice.stdout
    assert len(await audit_rows(setup.runtime, user_id, "admin.revoked")) == 1


async def test_a_grant_by_provider_and_subject_resolves_the_linked_user(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    subject, headers = await sign_in(setup.broker, idp)
    user_id = (await corp_profile(setup.broker, headers))["user"]["id"]

    granted = await setup.cli("grant", f"corp:{subject}")
    assert granted.returncode == 0, granted.stderr
    assert f"granted admin to user {user_id}" in granted.stdout
    headers = await _admin_headers(setup)
    assert await _admin_listing_status(setup, headers) == 200
    (audit,) = await audit_rows(setup.runtime, user_id, "admin.granted")
    assert audit.data == {"named_as": f"corp:{subject}"}

    revoked = await setup.cli("revoke", f"corp:{subject}")
    assert revoked.returncode == 0, revoked.stderr
    assert await _admin_listing_status(setup, headers) == 403


@pytest.mark.parametrize(
    ("command", "user", "message"),
    [
        ("grant", str(uuid.UUID(int=7)), f"no user has id {uuid.UUID(int=7)}"),
        ("revoke", str(uuid.UUID(int=7)), f"no user has id {uuid.UUID(int=7)}"),
        ("grant", "corp:nobody-signed-in-as-this", "no linked profile 'corp:nobody-signed-in"),
        ("revoke", "corp:nobody-signed-in-as-this", "no linked profile 'corp:nobody-signed-in"),
        ("grant", "alice@corp.example", "looks like an email"),
        ("grant", "user:alice@corp.example", "user: takes a broker user id"),
        ("grant", "not an identifier", "'not an identifier': give a broker user id"),
    ],
)
async def test_an_unknown_or_malformed_user_is_refused_and_nothing_is_written(
    setup: Setup, command: str, user: str, message: str
) -> None:
    before = await _written_counts(setup.runtime)
    result = await setup.cli(command, user)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert await _written_counts(setup.runtime) == before


async def test_the_dev_provider_cannot_name_an_admin(setup: Setup) -> None:
    # Its subject is whatever address someone typed: naming it would grant by email.
    email = f"dev-{uuid.uuid4().hex[:10]}@example.com"
    await login(setup.broker, provider="dev", dev_identity=(email, "Dev User"))
    before = await _written_counts(setup.runtime)
    result = await setup.cli("grant", f"dev:{email}")
    assert result.returncode == 1
    assert "the dev provider cannot grant admin" in result.stderr
    assert await _written_counts(setup.runtime) == before


async def test_a_revoke_says_when_the_configuration_still_makes_an_admin(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    _subject, headers = await sign_in(
        setup.broker, idp, sub=setup.config_admin_subject, admin_scope=True
    )
    assert await _admin_listing_status(setup, headers) == 200
    result = await setup.console_script("revoke", f"corp:{setup.config_admin_subject}")
    assert result.returncode == 0, result.stderr
    assert "has no admin grant; nothing changed" in result.stdout
    assert "still an admin through the admins: configuration" in result.stdout
    assert await _admin_listing_status(setup, headers) == 200


async def test_the_list_shows_granted_and_configured_admins(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    _subject, admin_headers = await sign_in(setup.broker, idp, sub=setup.config_admin_subject)
    config_admin = (await corp_profile(setup.broker, admin_headers))["user"]
    _subject, headers = await sign_in(setup.broker, idp)
    granted_user = (await corp_profile(setup.broker, headers))["user"]
    assert (await setup.cli("grant", granted_user["id"])).returncode == 0

    listed = await setup.cli("list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["user", "id", "email", "source"]
    rows = [tuple(line.split(None, 2)) for line in lines]
    (granted,) = [row for row in rows if row[0] == granted_user["id"]]
    assert granted[1] == granted_user["email"]
    assert granted[2].startswith("granted ") and granted[2].endswith(f" by cli:{OPERATOR}")
    configured = {row[2]: row[:2] for row in rows if row[2].startswith("config ")}
    assert configured == {
        f"config corp:{setup.config_admin_subject}": (config_admin["id"], config_admin["email"]),
        f"config corp:{setup.unlinked_admin_subject} (no linked profile yet)": ("-", "-"),
        f"config user:{setup.config_user_id} (no such user)": ("-", "-"),
    }
