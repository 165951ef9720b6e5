"""CSRF tokens for the broker's own forms: an HMAC of a browser-bound value under a keyring key.

A form carries ``HMAC-SHA256(key, value)`` in a hidden field, where ``value`` binds the form to
this browser (the browser-session cookie for the logout confirmation, the dashboard session for
the admin pages) and ``key`` is derived from the keyring for one *purpose* (HKDF,
``Keyring.derived_keys``): a token minted for one kind of form never passes another, and nobody
without the keyring can mint one. Checked in constant time; a token minted before a keyring
rotation still matches while its key is in the keyring.
"""

from __future__ import annotations

import hmac

from shared.crypto.keyring import Keyring
from shared.crypto.opaque import b64url


def _token(key: bytes, value: str) -> str:
    token: str = b64url(hmac.digest(key, value.encode(), "sha256")).decode("ascii")
    return token


def csrf_token(keyring: Keyring, purpose: str, value: str) -> str:
    """The token for forms bound to ``value``, under the primary key's ``purpose`` key."""
    return _token(keyring.derived_keys(purpose)[0], value)


def csrf_matches(keyring: Keyring, purpose: str, value: str, presented: str) -> bool:
    """Whether ``presented`` is the token for ``value`` under any of the keyring's keys."""
    given = presented.encode("utf-8", errors="replace")
    return any(
        hmac.compare_digest(_token(key, value).encode(), given)
        for key in keyring.derived_keys(purpose)
    )
