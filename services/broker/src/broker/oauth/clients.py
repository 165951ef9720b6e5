"""Client authentication at the token endpoint (RFC 6749 §2.3): Basic, POST body, or none."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

import structlog
from shared.settings import ClientConfig, Settings

from broker.http.errors import InvalidClient, InvalidRequest


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
    """What the request presents: a client id and (confidential clients) a secret."""

    client_id: str
    secret: str | None


def presented_credentials(authorization: str | None, params: Mapping[str, str]) -> Credentials:
    """The credentials as presented, checked for shape only (``InvalidClient`` for malformed
    HTTP Basic, ``InvalidRequest`` for two methods or two different client ids)."""
    basic = _basic_credentials(authorization) if authorization else None
    posted_secret = params.get("client_secret")
    if basic is not None and posted_secret is not None:
        raise InvalidRequest("use one client authentication method, not two")
    if basic is not None:
        client_id, secret = basic
        if params.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id does not match the authenticated client")
        return Credentials(client_id, secret)
    return Credentials(params.get("client_id") or "", posted_secret)


def verify_client(settings: Settings, credentials: Credentials) -> ClientConfig:
    """The registered client these credentials prove, or ``InvalidClient`` (401).

    The client's id joins the request's log context (the access line names it).
    """
    client = settings.client(credentials.client_id) if credentials.client_id else None
    if client is None:
        raise InvalidClient("unknown client or bad credentials")
    secret = credentials.secret
    if client.secret is None:
        if secret:
            raise InvalidClient("this is a public client; it has no secret")
    elif secret is None or not hmac.compare_digest(
        secret.encode(), client.secret.get_secret_value().encode()
    ):
        raise InvalidClient("unknown client or bad credentials")
    structlog.contextvars.bind_contextvars(client_id=client.id)
    return client


def authenticate_client(
    settings: Settings, authorization: str | None, params: Mapping[str, str]
) -> ClientConfig:
    """The authenticated client, or ``InvalidClient`` (401) / ``InvalidRequest``.

    Endpoints call it through ``broker.oauth.abuse_limits.authenticate``, which counts failures.
    """
    return verify_client(settings, presented_credentials(authorization, params))
