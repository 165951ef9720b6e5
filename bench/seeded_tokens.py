"""The seeded sessions' current refresh tokens, which a bench presents: derived from a per-run seed.

The database keeps only a token's SHA-256, so a seed that drew its tokens at random could never
present one. The admin seed therefore makes each session's current (unused) refresh token
``base64url(SHA-256("<seed>:<session id>"))`` — 43 characters like the broker's own — in SQL
(:func:`current_token_sql`), and a bench recomputes the same value here
(:func:`current_token`) for the sessions it picks (:func:`live_sessions`). The rotated tokens of
a session's history stay random: nothing presents them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Sequence

import psycopg
from shared.crypto.opaque import b64url
from shared.refresh_rotation.policy import BLOCKING_LINK_STATES

from bench.database import libpq_url


def new_token_seed() -> str:
    """A fresh seed for one run (hex: safe to inline in the seed's SQL)."""
    return secrets.token_hex(16)


def current_token(seed: str, session_id: uuid.UUID) -> str:
    """The current refresh token the seed gave session ``session_id``."""
    digest = hashlib.sha256(f"{seed}:{session_id}".encode()).digest()
    return bytes(b64url(digest)).decode("ascii")


def current_token_sql(seed: str, session_id: str) -> str:
    """SQL: :func:`current_token` of the uuid expression ``session_id``."""
    if not seed.isalnum():
        raise ValueError("the token seed is inlined in SQL: letters and digits only")
    digest = f"sha256(convert_to('{seed}:' || ({session_id})::text, 'UTF8'))"
    # 32 bytes are 44 base64 characters (one '=' of padding), below the 76 where encode() breaks
    # lines.
    return f"rtrim(translate(encode({digest}, 'base64'), '+/', '-_'), '=')"


def current_token_hash_sql(seed: str, session_id: str) -> str:
    """SQL: the SHA-256 the broker stores for :func:`current_token_sql` (``token_hash``)."""
    return f"sha256(convert_to({current_token_sql(seed, session_id)}, 'UTF8'))"


def live_sessions(
    database_url: str, seed: str, client_id: str, *, alive_until: dt.datetime, limit: int
) -> list[uuid.UUID]:
    """Up to ``limit`` seeded sessions of ``client_id``, in random order, whose current token is
    still the one ``seed`` gave them and would be rotated until ``alive_until``: session not
    revoked, user active, upstream link not blocking (``shared.refresh_rotation``), token unused
    and unexpired."""
    query = f"""
        SELECT s.id FROM auth_sessions AS s
        JOIN users AS u ON u.id = s.user_id
        JOIN refresh_tokens AS r ON r.session_id = s.id AND r.used_at IS NULL
        WHERE s.client_id = %(client)s AND s.revoked_at IS NULL AND u.status = 'active'
          AND r.expires_at > %(until)s AND r.token_hash = {current_token_hash_sql(seed, "s.id")}
          AND NOT EXISTS (SELECT 1 FROM oauth2_tokens AS t WHERE t.profile_id = s.profile_id
                          AND t.state = ANY(%(blocking)s))
        ORDER BY random() LIMIT %(limit)s
    """
    params = {
        "client": client_id,
        "until": alive_until,
        "blocking": list(BLOCKING_LINK_STATES),
        "limit": limit,
    }
    with psycopg.connect(libpq_url(database_url)) as connection:
        return [row[0] for row in connection.execute(query, params).fetchall()]


def current_tokens(seed: str, session_ids: Sequence[uuid.UUID]) -> list[str]:
    return [current_token(seed, session_id) for session_id in session_ids]
