"""Derived refresh-token successors: deterministic per token and key, unguessable without it."""

from __future__ import annotations

import datetime as dt

from shared.crypto.keyring import Keyring
from shared.crypto.opaque import new_opaque_token
from shared.refresh_rotation.policy import RotationPolicy


def _policy(keyring: Keyring) -> RotationPolicy:
    return RotationPolicy.build(keyring, refresh_ttl=60, reuse_interval=2)


def test_a_successor_is_the_same_for_the_same_token_and_keyring():
    keyring = Keyring.generate()
    token = new_opaque_token()
    assert _policy(keyring).successor(token) == _policy(keyring).successor(token)
    assert _policy(keyring).successor(token) != _policy(keyring).successor(new_opaque_token())


def test_a_successor_depends_on_the_keyring_and_is_as_long_as_a_drawn_token():
    token = new_opaque_token()
    one, other = _policy(Keyring.generate()), _policy(Keyring.generate())
    assert one.successor(token) != other.successor(token)
    assert len(one.successor(token)) == len(token) == 43  # 256 bits, base64url


def test_after_a_keyring_rotation_the_old_key_still_derives_the_old_successor():
    old = Keyring.generate("old")
    rotated = Keyring((Keyring.generate("new").keys[0], old.keys[0]))
    token = new_opaque_token()
    assert _policy(rotated).successor(token, 1) == _policy(old).successor(token)
    assert _policy(rotated).successor(token) != _policy(old).successor(token)


def test_expiry_is_the_refresh_ttl_from_now():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert _policy(Keyring.generate()).expires_at(now) == now + dt.timedelta(seconds=60)
