"""Upstream profiles made to fit the ``oauth2_profiles`` columns, at sign-in and at sync alike.

Display facts are clipped (names) or dropped (an over-long email or picture URL is unusable, not
shortened into another one); NUL characters, which PostgreSQL cannot store, are removed; the
identity key (the subject) is never altered — an unusable one is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shared.providers.base import UpstreamProfile


class UnusableIdentity(Exception):
    """The upstream asserted an identity the broker cannot key on (e.g. an over-long subject)."""


MAX_SUBJECT = 255
# Display facts are clipped to their columns; the identity key never is (it is refused).
_CLIP = {
    "email": 320,
    "name": 200,
    "given_name": 200,
    "family_name": 200,
    "preferred_username": 200,
    "picture": 2048,
}


def without_nul(value: Any) -> Any:
    """The value with NUL characters removed from every string (PostgreSQL stores none)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def fit_columns(profile: UpstreamProfile) -> UpstreamProfile:
    """The profile with display fields clipped to the column sizes; raises ``UnusableIdentity``."""
    if not profile.subject or len(profile.subject) > MAX_SUBJECT or "\x00" in profile.subject:
        raise UnusableIdentity("the upstream subject is empty, too long or not text")
    clipped: dict[str, Any] = {"claims": without_nul(dict(profile.claims))}
    for name, limit in _CLIP.items():
        value = getattr(profile, name)
        if value is not None and (len(value) > limit or "\x00" in value):
            # An over-long or NUL-carrying email or avatar URL is unusable, not shortened or
            # rewritten into another one; a name is cleaned and clipped.
            if name in ("email", "picture"):
                clipped[name] = None
            else:
                clipped[name] = value.replace("\x00", "")[:limit]
    if "email" in clipped:
        clipped["email_verified"] = False
        clipped["email_authoritative"] = False
    return dataclasses.replace(profile, **clipped)
