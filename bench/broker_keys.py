"""The keys a bench broker signs with, private halves included, for the baseline app to sign with.

Read from the broker's database and opened with the keyring the bench gave it
(``BROKER_DATABASE_URL``, ``BROKER_ENCRYPTION_KEYS``), through ``shared.signing_keys.
build_snapshot``, the broker's own way of choosing them: per algorithm, the key that signs now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.crypto.keyring import Keyring
from shared.db.database import create_engine
from shared.models import SigningKey
from shared.signing_keys import build_snapshot
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession


async def signing_jwks(broker_env: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """``{"keys": [...]}``: the private JWK (with its ``kid``) of each key the broker signs with."""
    engine = create_engine(broker_env["BROKER_DATABASE_URL"], pool_size=1)
    try:
        async with AsyncSession(engine) as session:
            rows = list((await session.scalars(select(SigningKey))).all())
    finally:
        await engine.dispose()
    keyring = Keyring.parse(broker_env["BROKER_ENCRYPTION_KEYS"])
    snapshot = build_snapshot(rows, keyring, dt.datetime.now(dt.UTC))
    return {
        "keys": [dict(signer.key.as_dict(private=True)) for signer in snapshot.signing.values()]
    }
