"""What every settings schema shares: the strict frozen model, the id pattern and the URL checks."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

# Provider ids (and the provider half of an ``admins:`` entry).
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (bracketed or not) and ``localhost``."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is 127.0.0.0/8, ::1 or ``localhost``."""
    return is_loopback_host(urlsplit(url).hostname or "")


def check_url(value: str, field: str) -> str:
    """``value`` if it is an absolute http(s) URL, https unless loopback; else ValueError."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback_url(value):
        raise ValueError(f"{field} must use https unless it is a loopback address")
    return value


class Strict(BaseModel):
    """Immutable, and no unknown keys: a typo in the configuration is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
