"""``broker keys ...``: list the signing keys, rotate now, revoke a compromised key, and re-encrypt
the stored secrets under the keyring's newest key.

Each command changes the database and exits; running brokers pick the change up within
``BROKER_KEY_RELOAD_INTERVAL`` seconds (their key maintenance reloads the keys).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from shared.clock import SystemClock
from shared.crypto.reencryption import ColumnReport, reencrypt_all
from shared.db.database import create_engine
from shared.key_rotation import KeySchedule, UnknownKey, maintain_keys, revoke_key
from shared.models import SigningKey
from shared.settings import Settings
from shared.signing_keys import can_sign
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.cli.command import CommandError, cli_actor, run_command


def _state(row: SigningKey, now: dt.datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if can_sign(row, now):
        return "signing"
    if row.activates_at > now:
        return "next"
    return "retired"  # published until its tokens have expired


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def render(rows: Sequence[SigningKey], now: dt.datetime) -> str:
    lines = [f"{'kid':<20}{'alg':<7}{'state':<9}{'signs from':<22}{'retires':<22}{'leaves JWKS'}"]
    for row in sorted(rows, key=lambda r: (r.alg, r.activates_at)):
        lines.append(
            f"{row.kid:<20}{row.alg:<7}{_state(row, now):<9}{_when(row.activates_at):<22}"
            f"{_when(row.retires_at):<22}{_when(row.expires_at)}"
        )
    return "\n".join(lines)


def render_reencryption(reports: Sequence[ColumnReport], primary: str) -> str:
    lines = [f"re-encrypted under key {primary!r}:"]
    for report in reports:
        column = f"{report.column.table}.{report.column.column}"
        line = f"  {column:<34}{report.reencrypted:>8}"
        if report.remaining:
            line += f"   ({report.remaining} changed meanwhile: run again)"
        lines.append(line)
    return "\n".join(lines)


async def _run(settings: Settings, command: str, kid: str | None) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    now = SystemClock().now()
    actor = cli_actor()
    schedule = KeySchedule.from_settings(settings)
    try:
        if command == "list":
            async with AsyncSession(engine) as session:
                rows = list((await session.scalars(select(SigningKey))).all())
        elif command == "rotate-encryption":
            reports = await reencrypt_all(engine, settings.keyring, now=now, actor=actor)
            return render_reencryption(reports, settings.keyring.primary_kid)
        elif command == "rotate":
            rows = await maintain_keys(
                engine,
                settings.keyring,
                schedule,
                settings.signing_algorithms,
                now,
                rotate_now=True,
                actor=actor,
            )
        else:
            assert kid is not None
            try:
                rows = await revoke_key(
                    engine,
                    settings.keyring,
                    schedule,
                    settings.signing_algorithms,
                    kid,
                    now,
                    actor=actor,
                )
            except UnknownKey:
                raise CommandError(f"no signing key has kid {kid!r}") from None
        return render(rows, now)
    finally:
        await engine.dispose()


def run_key_command(settings: Settings, command: str, kid: str | None = None) -> int:
    """Run ``list``, ``rotate``, ``revoke`` or ``rotate-encryption``; print what it did (an
    unknown kid or a refusal of the database: exit 1, the reason on stderr)."""
    return run_command(_run(settings, command, kid))
