"""The AES-GCM keyring (docs/security.md "Encryption at rest") and opaque bearer values
(docs/security.md "Refresh-token rotation and reuse")."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from shared.crypto.keyring import DecryptionError, Keyring, KeyringError
from shared.crypto.opaque import new_opaque_token, token_hash

AAD_ROW_1 = b"oauth2_tokens:1:access_token"
AAD_ROW_2 = b"oauth2_tokens:2:access_token"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


# --- encryption ---------------------------------------------------------------------------------


def test_encrypt_then_decrypt_returns_the_plaintext() -> None:
    keyring = Keyring.generate()

    sealed = keyring.encrypt(b"upstream refresh token", AAD_ROW_1)

    assert b"upstream refresh token" not in sealed
    assert keyring.decrypt(sealed, AAD_ROW_1) == b"upstream refresh token"


def test_two_encryptions_of_one_value_differ() -> None:
    keyring = Keyring.generate()

    assert keyring.encrypt(b"same", AAD_ROW_1) != keyring.encrypt(b"same", AAD_ROW_1)


def test_ciphertext_copied_into_another_row_fails_to_decrypt() -> None:
    keyring = Keyring.generate()
    sealed = keyring.encrypt(b"token of row 1", AAD_ROW_1)

    with pytest.raises(DecryptionError):
        keyring.decrypt(sealed, AAD_ROW_2)


def test_tampered_ciphertext_fails_to_decrypt() -> None:
    keyring = Keyring.generate()
    sealed = bytearray(keyring.encrypt(b"token", AAD_ROW_1))
    sealed[-1] ^= 0x01

    with pytest.raises(DecryptionError):
        keyring.decrypt(bytes(sealed), AAD_ROW_1)


@pytest.mark.parametrize("keep", [0, 3, 6, 10])
def test_truncated_ciphertext_fails_with_decryption_error(keep: int) -> None:
    # A column cut short is tampering too: callers catch DecryptionError, not ValueError.
    keyring = Keyring.generate()
    sealed = keyring.encrypt(b"token", AAD_ROW_1)

    with pytest.raises(DecryptionError):
        keyring.decrypt(sealed[:keep], AAD_ROW_1)


def test_ciphertext_of_an_unknown_key_fails_to_decrypt() -> None:
    sealed = Keyring.generate("old").encrypt(b"token", AAD_ROW_1)

    with pytest.raises(DecryptionError, match="unknown encryption key id"):
        Keyring.generate("new").decrypt(sealed, AAD_ROW_1)


def test_rotated_keyring_encrypts_with_the_new_key_and_still_decrypts_old_values() -> None:
    old = Keyring.generate("k1")
    old_sealed = old.encrypt(b"sealed before rotation", AAD_ROW_1)
    new_key = os.urandom(32)
    rotated = Keyring.parse(f"k2:{b64(new_key)},{old.serialize()}")

    new_sealed = rotated.encrypt(b"sealed after rotation", AAD_ROW_1)

    assert rotated.primary_kid == "k2"
    assert rotated.key_id_of(old_sealed) == "k1"
    assert rotated.key_id_of(new_sealed) == "k2"
    assert rotated.decrypt(old_sealed, AAD_ROW_1) == b"sealed before rotation"
    assert rotated.decrypt(new_sealed, AAD_ROW_1) == b"sealed after rotation"


# --- parsing ------------------------------------------------------------------------------------


def test_serialize_then_parse_gives_the_same_keyring() -> None:
    keyring = Keyring(keys=(("a", os.urandom(32)), ("b.2", os.urandom(32))))

    assert Keyring.parse(keyring.serialize()) == keyring


def test_parse_ignores_blank_entries_and_spaces() -> None:
    key = os.urandom(32)

    assert Keyring.parse(f" k1:{b64(key)} , ") == Keyring(keys=(("k1", key),))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"k1:{b64(os.urandom(16))}", "must be 32 bytes"),
        (f"k1:{b64(os.urandom(33))}", "must be 32 bytes"),
        ("k1:a", "not valid base64url"),
        ("k1:" + "A" * 41, "not valid base64url"),
        (b64(os.urandom(32)), "kid:base64url-key"),
        (f"k1:{b64(os.urandom(32))},k1:{b64(os.urandom(32))}", "appears twice"),
        (f"bad id:{b64(os.urandom(32))}", "key id"),
        ("", "at least one key"),
    ],
    ids=[
        "short-key",
        "long-key",
        "bad-base64-length",
        "bad-base64-characters",
        "no-kid",
        "duplicate-kid",
        "bad-kid",
        "empty",
    ],
)
def test_malformed_keyring_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(spec)


# --- opaque tokens ------------------------------------------------------------------------------


def test_opaque_tokens_carry_at_least_256_random_bits() -> None:
    tokens = {new_opaque_token() for _ in range(50)}

    assert len(tokens) == 50
    for token in tokens:
        assert len(token) >= 43
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 32


def test_token_hash_is_sha256_of_the_token() -> None:
    token = new_opaque_token()

    assert token_hash(token) == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in token_hash(token)


def test_derived_keys_are_per_purpose_and_per_key_primary_first():
    ring = Keyring.generate("a")
    two = Keyring((("b", bytes(32)), *ring.keys))
    assert len(two.derived_keys("x")) == 2
    assert two.derived_keys("x")[1] == ring.derived_keys("x")[0]  # same key, same derivation
    assert ring.derived_keys("x") != ring.derived_keys("y")
    assert all(len(key) == 32 for key in two.derived_keys("x"))
    assert ring.keys[0][1] not in ring.derived_keys("x")  # never the encryption key itself
