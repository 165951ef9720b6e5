"""Client authentication (RFC 6749 §2.3, OIDC Core §9): Basic, POST body, a signed assertion
(``private_key_jwt``, RFC 7523), or none for a public client.

Each client registers how it authenticates (``ClientConfig.auth_methods``); credentials sent
any other way are ``invalid_client``, as is a request that mixes two methods. Endpoints
authenticate through ``broker.oauth.abuse_limits.authenticate``, which counts failures and
spends an assertion's ``jti`` (``broker.oauth.client_assertions.record_assertion``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

import structlog
from shared.settings import ClientConfig, Settings
from shared.settings.clients import AuthMethod

from broker.http.errors import InvalidClient, InvalidRequest
from broker.oauth.client_assertions import (
    JWT_BEARER,
    VerifiedAssertion,
    asserted_client_id,
    verify_assertion,
)

log = structlog.get_logger("broker.clients")


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, non-ASCII input and UnicodeDecodeError alike
        raise InvalidClient("malformed HTTP Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed HTTP Basic credentials")
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


@dataclass(frozen=True)
class Credentials:
    """What the request presents: a client id, how it authenticates, and with what."""

    client_id: str
    secret: str | None
    method: AuthMethod
    assertion: str | None = None  # private_key_jwt: the client assertion, not yet verified


def _assertion_credentials(params: Mapping[str, str]) -> Credentials:
    assertion, assertion_type = params.get("client_assertion"), params.get("client_assertion_type")
    if assertion is None or assertion_type is None:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if assertion_type != JWT_BEARER:
        raise InvalidClient(f"client_assertion_type must be {JWT_BEARER}")
    client_id = asserted_client_id(assertion)
    if params.get("client_id") not in (None, client_id):
        # RFC 7521 §4.2: client_id, when sent, names the client the assertion is about.
        raise InvalidRequest("client_id does not match the client assertion")
    return Credentials(client_id, None, "private_key_jwt", assertion)


def presented_credentials(authorization: str | None, params: Mapping[str, str]) -> Credentials:
    """The credentials as presented, checked for shape only (``InvalidClient`` for malformed
    HTTP Basic or an unreadable assertion, ``InvalidRequest`` for two methods or two different
    client ids)."""
    basic = _basic_credentials(authorization) if authorization else None
    posted_secret = params.get("client_secret")
    asserted = "client_assertion" in params or "client_assertion_type" in params
    if (basic is not None) + (posted_secret is not None) + asserted > 1:
        raise InvalidRequest("use one client authentication method, not two")
    if asserted:
        return _assertion_credentials(params)
    if basic is not None:
        client_id, secret = basic
        if params.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id does not match the authenticated client")
        return Credentials(client_id, secret, "client_secret_basic")
    client_id = params.get("client_id") or ""
    if posted_secret is not None:
        return Credentials(client_id, posted_secret, "client_secret_post")
    return Credentials(client_id, None, "none")


@dataclass(frozen=True)
class AuthenticatedClient:
    """A client whose credentials checked out; with ``private_key_jwt``, the assertion whose
    ``jti`` must still be spent before the client is let in."""

    client: ClientConfig
    assertion: VerifiedAssertion | None = None


def verify_client(
    settings: Settings,
    credentials: Credentials,
    *,
    now: dt.datetime,
    audiences: Collection[str],
) -> AuthenticatedClient:
    """The registered client these credentials prove, or ``InvalidClient`` (401).

    ``now`` and ``audiences`` (``client_assertions.assertion_audiences``) check an assertion.
    The client's id joins the request's log context (the access line names it).
    """
    client = settings.client(credentials.client_id) if credentials.client_id else None
    if client is None:
        raise InvalidClient("unknown client or bad credentials")
    assertion = None
    if client.is_public:
        if credentials.secret or credentials.assertion is not None:
            raise InvalidClient("this is a public client; it has no secret or keys")
    elif credentials.method not in client.auth_methods:
        # OIDC Core §9 / RFC 7591 §2: a client authenticates the way it registered, only.
        log.info(
            "client_auth.wrong_method",
            client_id=client.id,
            method=credentials.method,
            registered=list(client.auth_methods),
        )
        raise InvalidClient(
            f"this client authenticates with {' or '.join(client.auth_methods)}, "
            f"not {credentials.method}"
        )
    elif credentials.assertion is not None:
        assertion = verify_assertion(
            client,
            credentials.assertion,
            audiences=audiences,
            now=now,
            max_lifetime=settings.client_assertion_max_lifetime,
        )
    elif (
        credentials.secret is None
        or client.secret is None
        or not hmac.compare_digest(
            credentials.secret.encode(), client.secret.get_secret_value().encode()
        )
    ):
        raise InvalidClient("unknown client or bad credentials")
    structlog.contextvars.bind_contextvars(client_id=client.id)
    return AuthenticatedClient(client, assertion)
