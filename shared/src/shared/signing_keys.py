"""The broker's signing keys: creation, storage (private half encrypted) and the in-memory store.

A key is published in JWKS from ``created_at`` and signs from ``activates_at``; it stops signing
at ``retires_at`` and leaves JWKS at ``expires_at``. ``KeyStore`` serialises JWKS once per key
change, so the JWKS endpoint and the token hot path do no database or JSON work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, KeySet, RSAKey

from shared.clock import Clock
from shared.crypto.jwt_signer import JWTSigner
from shared.crypto.keyring import Keyring
from shared.crypto.sealed_columns import SIGNING_KEY_PRIVATE
from shared.models import SigningKey

JWK = ECKey | RSAKey


def generate_signing_key(
    alg: str, keyring: Keyring, now: dt.datetime, activates_at: dt.datetime | None = None
) -> SigningKey:
    """A new key row; the private JWK is sealed with the keyring, bound to its kid."""
    kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
    key: JWK
    if alg == "ES256":
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": alg, "use": "sig"})
    elif alg == "RS256":
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg, "use": "sig"})
    else:
        raise ValueError(f"unsupported signing algorithm {alg}")
    private = json.dumps(key.as_dict(private=True)).encode()
    return SigningKey(
        kid=kid,
        alg=alg,
        public_jwk=dict(key.as_dict(private=False)),
        private_key_enc=keyring.encrypt(private, SIGNING_KEY_PRIVATE.aad(kid)),
        created_at=now,
        activates_at=activates_at or now,
    )


@dataclass(frozen=True)
class KeySnapshot:
    """An immutable view of the keys: swapped whole when keys change."""

    signing: dict[str, JWTSigner]  # alg -> the key that signs now
    verification: KeySet  # every published key (public halves)
    jwks_body: bytes
    etag: str

    def signer(self, alg: str) -> JWTSigner:
        return self.signing[alg]


def _published(row: SigningKey, now: dt.datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def can_sign(row: SigningKey, now: dt.datetime) -> bool:
    return (
        _published(row, now)
        and row.activates_at <= now
        and (row.retires_at is None or row.retires_at > now)
    )


def build_snapshot(rows: list[SigningKey], keyring: Keyring, now: dt.datetime) -> KeySnapshot:
    published = sorted((r for r in rows if _published(r, now)), key=lambda r: r.created_at)
    signing: dict[str, JWTSigner] = {}
    for row in sorted(published, key=lambda r: r.activates_at):
        if can_sign(row, now):  # the newest active key per algorithm wins
            private: dict[str, Any] = json.loads(
                keyring.decrypt(row.private_key_enc, SIGNING_KEY_PRIVATE.aad(row.kid))
            )
            key = (ECKey if row.alg.startswith("ES") else RSAKey).import_key(private)
            signing[row.alg] = JWTSigner(row.kid, row.alg, key)
    public = [
        {name: value for name, value in row.public_jwk.items() if name != "d"} for row in published
    ]
    body = json.dumps({"keys": public}, separators=(",", ":"), sort_keys=True).encode()
    verification = KeySet.import_key_set({"keys": public}) if public else KeySet([])  # type: ignore[arg-type]
    return KeySnapshot(
        signing=signing,
        verification=verification,
        jwks_body=body,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


class KeyStore:
    """Holds the current ``KeySnapshot``; ``install`` replaces it (``shared.key_rotation``)."""

    def __init__(self, keyring: Keyring, clock: Clock, algorithms: tuple[str, ...]) -> None:
        self._keyring = keyring
        self._clock = clock
        self._algorithms = algorithms
        self._snapshot: KeySnapshot | None = None
        self._fingerprint: tuple[object, ...] = ()

    @property
    def snapshot(self) -> KeySnapshot:
        if self._snapshot is None:
            raise RuntimeError("signing keys are not loaded")
        return self._snapshot

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms the broker keeps a signing key for (the default first)."""
        return self._algorithms

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None and all(
            alg in self._snapshot.signing for alg in self._algorithms
        )

    def install(self, rows: list[SigningKey]) -> None:
        """Use these key rows from now on; the snapshot is rebuilt only if something changed."""
        now = self._clock.now()
        fingerprint = tuple(
            sorted(
                (row.kid, row.revoked_at, row.expires_at, can_sign(row, now))
                for row in rows
                if _published(row, now)
            )
        )
        if self._snapshot is not None and fingerprint == self._fingerprint:
            return
        self._snapshot = build_snapshot(rows, self._keyring, now)
        self._fingerprint = fingerprint
