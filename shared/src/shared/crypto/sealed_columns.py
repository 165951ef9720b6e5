"""Every encrypted database column, and the associated data that binds its ciphertexts.

docs/security.md "Encryption at rest": a ciphertext is AES-GCM under a keyring key with associated
data
``{table}:{row key}:{purpose}``, so a value copied into another row, or another column of the
same row, fails to decrypt. This list is what ``broker keys rotate-encryption`` re-encrypts;
a new encrypted column must be added here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SealedColumn:
    table: str
    key_column: str  # the row's primary key
    column: str
    purpose: str  # the last part of the associated data

    def aad(self, row_key: object) -> bytes:
        return f"{self.table}:{row_key}:{self.purpose}".encode()


UPSTREAM_ACCESS_TOKEN = SealedColumn("oauth2_tokens", "id", "access_token_enc", "access_token")
UPSTREAM_REFRESH_TOKEN = SealedColumn("oauth2_tokens", "id", "refresh_token_enc", "refresh_token")
UPSTREAM_ID_TOKEN = SealedColumn("oauth2_tokens", "id", "id_token_enc", "id_token")
SIGNING_KEY_PRIVATE = SealedColumn("signing_keys", "kid", "private_key_enc", "private")
LOGIN_CODE_VERIFIER = SealedColumn("login_states", "id", "code_verifier_enc", "code_verifier")

SEALED_COLUMNS = (
    UPSTREAM_ACCESS_TOKEN,
    UPSTREAM_REFRESH_TOKEN,
    UPSTREAM_ID_TOKEN,
    SIGNING_KEY_PRIVATE,
    LOGIN_CODE_VERIFIER,
)
UPSTREAM_TOKEN_COLUMNS = {
    "access_token": UPSTREAM_ACCESS_TOKEN,
    "refresh_token": UPSTREAM_REFRESH_TOKEN,
    "id_token": UPSTREAM_ID_TOKEN,
}
