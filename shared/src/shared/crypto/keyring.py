"""AES-GCM keyring: the first key encrypts, every key decrypts; ciphertexts name their key id.

A ciphertext is ``kid_len (1 byte) | kid | nonce (12 bytes) | AES-GCM(ciphertext+tag)``. The
associated data binds a value to its row and purpose (docs/security.md "Encryption at rest"): a
ciphertext copied into
another row, or into another column of the same row, fails to decrypt.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyringError(ValueError):
    """The keyring specification is malformed."""


class DecryptionError(Exception):
    """A ciphertext could not be decrypted: unknown key id, tampering or wrong associated data."""


@dataclass(frozen=True)
class Keyring:
    """Ordered AES-256 keys by id; ``keys[0]`` is the one that encrypts."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    def __repr__(self) -> str:
        # Never the key material: only the ids, so a traceback or a settings dump is safe.
        return f"Keyring(key_ids={[kid for kid, _ in self.keys]!r})"

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the keyring needs at least one key")
        seen: set[str] = set()
        for kid, key in self.keys:
            if not _KID.match(kid):
                raise KeyringError(f"key id {kid!r} must match {_KID.pattern}")
            if len(key) != 32:
                raise KeyringError(f"key {kid!r} must be 32 bytes, got {len(key)}")
            if kid in seen:
                raise KeyringError(f"key id {kid!r} appears twice")
            seen.add(kid)

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse ``kid:base64url-32-byte-key,kid2:...`` (the ``BROKER_ENCRYPTION_KEYS`` format)."""
        entries = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, encoded = part.partition(":")
            if not sep:
                raise KeyringError("each entry must be kid:base64url-key")
            try:
                key = base64.b64decode(
                    encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True
                )
            except ValueError as exc:
                raise KeyringError(f"key {kid!r} is not valid base64url") from exc
            entries.append((kid, key))
        return cls(tuple(entries))

    @classmethod
    def generate(cls, kid: str = "k1") -> Keyring:
        """A fresh single-key keyring (development and tests)."""
        return cls(((kid, AESGCM.generate_key(bit_length=256)),))

    def serialize(self) -> str:
        """The inverse of :meth:`parse`."""
        return ",".join(
            f"{kid}:{base64.urlsafe_b64encode(key).rstrip(b'=').decode()}" for kid, key in self.keys
        )

    @property
    def primary_kid(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext, associated_data)
        kid_bytes = kid.encode()
        return bytes([len(kid_bytes)]) + kid_bytes + nonce + sealed

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        if not ciphertext:
            raise DecryptionError("empty ciphertext")
        kid_len = ciphertext[0]
        kid = ciphertext[1 : 1 + kid_len].decode(errors="replace")
        body = ciphertext[1 + kid_len :]
        key = dict(self.keys).get(kid)
        if key is None:
            raise DecryptionError(f"unknown encryption key id {kid!r}")
        if len(body) < 12 + 16:  # nonce + GCM tag
            raise DecryptionError("ciphertext is truncated")
        try:
            return AESGCM(key).decrypt(body[:12], body[12:], associated_data)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext failed authentication") from exc

    def derived_keys(self, purpose: str) -> tuple[bytes, ...]:
        """One 32-byte key per keyring key for ``purpose`` (HKDF-SHA256), the primary's first.

        Keys for other jobs than encryption (the refresh-token successor MAC) come from the
        keyring this way, so there is one secret to provision and rotate.
        """
        return tuple(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)
            for _, key in self.keys
        )

    def key_id_of(self, ciphertext: bytes) -> str:
        """The key id a ciphertext was sealed with (for re-encryption batches)."""
        if not ciphertext:
            raise DecryptionError("empty ciphertext")
        return ciphertext[1 : 1 + ciphertext[0]].decode(errors="replace")
