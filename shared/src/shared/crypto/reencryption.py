"""Re-encrypting every sealed column under the keyring's newest key, while the broker serves.

After a new key is put first in ``BROKER_ENCRYPTION_KEYS`` (the old ones stay, to decrypt),
``broker keys rotate-encryption`` walks each table of ``SEALED_COLUMNS`` in key order, in small
batches, each its own short transaction. A ciphertext under an older key is decrypted and sealed
again under the primary key, and written only if the column still holds the ciphertext that was
read (compare and set), so a concurrent writer — a login storing new upstream tokens, the worker
refreshing them — is never overwritten; its value is already under the primary key anyway.
When the command reports nothing left under old keys, those keys can leave the keyring.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import shared.models  # noqa: F401  (importing the package registers every table in Base.metadata)
from shared.audit import record_audit_core
from shared.crypto.keyring import Keyring
from shared.crypto.sealed_columns import SEALED_COLUMNS, SealedColumn
from shared.db.base import Base


@dataclass(frozen=True)
class ColumnReport:
    column: SealedColumn
    reencrypted: int
    remaining: int  # still under an older key (changed by someone else meanwhile: run again)


async def _reencrypt_column(
    engine: AsyncEngine, keyring: Keyring, sealed: SealedColumn, batch_size: int
) -> ColumnReport:
    table = Base.metadata.tables[sealed.table]
    key, value = table.c[sealed.key_column], table.c[sealed.column]
    primary = keyring.primary_kid
    done = remaining = 0
    last: object = None
    while True:
        async with engine.begin() as connection:
            query = select(key, value).where(value.is_not(None)).order_by(key).limit(batch_size)
            if last is not None:
                query = query.where(key > last)
            rows = (await connection.execute(query)).all()
            for row_key, ciphertext in rows:
                if keyring.key_id_of(ciphertext) == primary:
                    continue
                plaintext = keyring.decrypt(ciphertext, sealed.aad(row_key))
                changed = await connection.execute(
                    update(table)
                    .where(key == row_key, value == ciphertext)
                    .values({sealed.column: keyring.encrypt(plaintext, sealed.aad(row_key))})
                )
                if changed.rowcount == 1:
                    done += 1
                else:
                    remaining += 1
        if len(rows) < batch_size:
            return ColumnReport(sealed, done, remaining)
        last = rows[-1][0]


async def reencrypt_all(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    now: dt.datetime,
    actor: str,
    batch_size: int = 200,
    columns: Iterable[SealedColumn] = SEALED_COLUMNS,
) -> list[ColumnReport]:
    """Re-encrypt every sealed column under ``keyring``'s primary key; audited once."""
    reports = [await _reencrypt_column(engine, keyring, sealed, batch_size) for sealed in columns]
    async with engine.begin() as connection:
        await record_audit_core(
            connection,
            action="keyring.reencrypted",
            actor=actor,
            subject=f"keyring:{keyring.primary_kid}",
            data={f"{r.column.table}.{r.column.column}": r.reencrypted for r in reports},
            now=now,
        )
    return reports
