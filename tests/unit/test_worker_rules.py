"""The worker's decisions that need no I/O: when a link is due, what an upstream answer means,
how long to wait, and the settings that guard the avatar fetch."""

from __future__ import annotations

import datetime as dt
import email.utils
from types import SimpleNamespace

import pytest
from authlib.integrations.base_client.errors import OAuthError
from shared.crypto.keyring import Keyring
from shared.jobs.upstream_refresh import is_due
from shared.providers.errors import ProviderInvalidResponse, ProviderRejected
from shared.providers.oauth2 import _REFRESH_REJECTED, parse_retry_after, translated_errors
from shared.settings import ConfigError, make_settings

NOW = dt.datetime(2031, 1, 1, 12, 0, tzinfo=dt.UTC)
SETTINGS = make_settings(keyring=Keyring.generate(), upstream_refresh_margin=300)
SEALED = {"has_refresh_token": True}


def link(*, stored_ago: float, expires_in: float, state: str = "ok") -> SimpleNamespace:
    return SimpleNamespace(
        state=state,
        expires_at=NOW + dt.timedelta(seconds=expires_in),
        updated_at=NOW - dt.timedelta(seconds=stored_ago),
        next_attempt_at=None,
    )


@pytest.mark.parametrize(
    ("stored_ago", "expires_in", "due"),
    [
        (3300, 300, True),  # an hour-long token, five minutes left
        (3000, 600, False),  # outside the margin
        (10, 290, False),  # a 5-minute token just refreshed: not at every scan
        (150, 150, True),  # ... but at half its lifetime
        (200, 100, True),
    ],
)
def test_a_link_is_due_within_the_margin_and_after_half_its_lifetime(
    stored_ago: float, expires_in: float, due: bool
) -> None:
    assert (
        is_due(link(stored_ago=stored_ago, expires_in=expires_in), SETTINGS, NOW, **SEALED) is due
    )


def test_a_failing_link_is_due_when_its_backoff_ends_not_before() -> None:
    failing = link(stored_ago=5, expires_in=200, state="refresh_failing")
    assert is_due(failing, SETTINGS, NOW, **SEALED)
    failing.next_attempt_at = NOW + dt.timedelta(seconds=30)
    assert not is_due(failing, SETTINGS, NOW, **SEALED)
    assert not is_due(link(stored_ago=3300, expires_in=10), SETTINGS, NOW, has_refresh_token=False)
    for state in ("revoked", "needs_reauth"):
        assert not is_due(
            link(stored_ago=3300, expires_in=10, state=state), SETTINGS, NOW, **SEALED
        )


async def test_only_invalid_grant_means_a_refresh_token_is_dead() -> None:
    with pytest.raises(ProviderRejected):
        async with translated_errors("token refresh", _REFRESH_REJECTED):
            raise OAuthError(error="invalid_grant")
    # docs/security.md "Upstream refresh": a client no longer allowed to refresh is a configuration
    # problem upstream.
    for error in ("unauthorized_client", "invalid_token", "invalid_client"):
        with pytest.raises(ProviderInvalidResponse):
            async with translated_errors("token refresh", _REFRESH_REJECTED):
                raise OAuthError(error=error)


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert parse_retry_after("120") == 120
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
    seconds = parse_retry_after(email.utils.format_datetime(later, usegmt=True))
    assert seconds is not None and 590 <= seconds <= 600
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_private_network_fetches_are_refused_with_a_public_issuer() -> None:
    with pytest.raises(ConfigError, match="BROKER_ALLOW_PRIVATE_NETWORK_FETCH"):
        make_settings(
            keyring=Keyring.generate(),
            issuer="https://login.example.com",
            providers=[
                {
                    "id": "corp",
                    "type": "oidc",
                    "issuer": "https://sso.example.com",
                    "client_id": "broker",
                }
            ],
            allow_private_network_fetch=True,
        )
