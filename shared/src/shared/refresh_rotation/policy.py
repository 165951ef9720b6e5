"""What every rotation path shares: the refresh TTL, the reuse interval, and a token's successor.

**Successors are derived, not drawn.** A token's successor is HMAC-SHA256 of the token under a
key derived from the keyring (256 bits, unpredictable without the keyring). So when the same
token is presented again within the reuse interval — a retry after a lost response (a crash, a
cut connection, a proxy timeout), two browser tabs refreshing at once — the broker can hand out
that same successor again (same value, same expiry), and still store nothing but SHA-256
hashes. When it does, and when a second presentation is a replay instead: ``replays``.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field

from shared.crypto.keyring import Keyring
from shared.crypto.opaque import b64url
from shared.settings import ReuseResponse

SUCCESSOR_PURPOSE = "refresh-token-successor"
# Link states that stop a session's refreshes (the others are "ok" and "refresh_failing").
BLOCKING_LINK_STATES = ("revoked", "needs_reauth")


@dataclass(frozen=True)
class RotationPolicy:
    """How long refresh tokens live, the reuse interval, and the keys successors derive from."""

    refresh_ttl: int
    reuse_interval: int  # seconds; 0: any second presentation is a replay
    successor_keys: tuple[bytes, ...] = field(repr=False)  # the keyring's keys, primary first
    reuse_response: ReuseResponse = "family"  # what a replay revokes

    @classmethod
    def build(
        cls,
        keyring: Keyring,
        *,
        refresh_ttl: int,
        reuse_interval: int,
        reuse_response: ReuseResponse = "family",
    ) -> RotationPolicy:
        keys = keyring.derived_keys(SUCCESSOR_PURPOSE)
        return cls(refresh_ttl, reuse_interval, keys, reuse_response)

    def successor(self, presented: str, key_index: int = 0) -> str:
        digest = hmac.digest(self.successor_keys[key_index], presented.encode(), "sha256")
        return b64url(digest).decode("ascii")

    def expires_at(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.refresh_ttl)
