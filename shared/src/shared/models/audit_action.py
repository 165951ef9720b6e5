"""``audit_actions``: every security-relevant change, written in the transaction that made it.

On PostgreSQL the table is partitioned by week on ``occurred_at`` (migration 0009,
``shared.db.audit_partitions``), and its primary key is ``(id, occurred_at)``: a partitioned
table's unique keys contain the partition key. The model keeps ``id`` alone, which is what
SQLite's one table has; ids are unique on both (one sequence draws them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, FetchedValue, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import JSONType, UTCDateTime

# Written by every refresh-token rotation: by far the most frequent action.
ROTATED = "refresh_token.rotated"


class AuditAction(Base):
    __tablename__ = "audit_actions"
    # The audit relay reads rows in (transaction, row) order: shared.jobs.audit_relay.
    __table_args__ = (
        Index("ix_audit_actions_txid_id", "txid", "id"),
        # The admin audit listing by action or actor, newest first by (occurred_at, id).
        # Partial: the one action written on every token rotation is left out, so the hot path
        # never writes to them (the listing finds rotations through the occurred_at index,
        # where they are the bulk).
        Index(
            "ix_audit_actions_action_occurred_at_id",
            "action",
            "occurred_at",
            "id",
            postgresql_where=text(f"action <> '{ROTATED}'"),
            sqlite_where=text(f"action <> '{ROTATED}'"),
        ),
        Index(
            "ix_audit_actions_actor_occurred_at_id",
            "actor",
            "occurred_at",
            "id",
            postgresql_where=text(f"action <> '{ROTATED}'"),
            sqlite_where=text(f"action <> '{ROTATED}'"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # Written on every token rotation: the indexes it maintains are kept to the primary key,
    # (txid, id), subject and occurred_at.
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # uuid4: unique without an index
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(330))  # provider:subject fits
    subject: Mapped[str | None] = mapped_column(String(160), index=True)
    client_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    # PostgreSQL: the writing transaction's id (``pg_current_xact_id()``, a server default, so
    # every insert — the refresh hot path's CTE included — gets it). NULL on SQLite, where
    # writers are serialised and the row id alone is commit order.
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())
