"""Client authentication at the token endpoint (RFC 6749 §2.3): Basic, POST body, or none."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from urllib.parse import unquote_plus

import structlog
from shared.settings import ClientConfig, Settings

from broker.errors import InvalidClient, InvalidRequest


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


def authenticate_client(
    settings: Settings, authorization: str | None, params: Mapping[str, str]
) -> ClientConfig:
    """The authenticated client, or ``InvalidClient`` (401) / ``InvalidRequest``.

    The client's id joins the request's log context (the access line names it).
    """
    basic = _basic_credentials(authorization) if authorization else None
    posted_secret = params.get("client_secret")
    if basic is not None and posted_secret is not None:
        raise InvalidRequest("use one client authentication method, not two")
    secret: str | None
    if basic is not None:
        client_id, secret = basic
        if params.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id does not match the authenticated client")
    else:
        client_id = params.get("client_id") or ""
        secret = posted_secret
    client = settings.client(client_id) if client_id else None
    if client is None:
        raise InvalidClient("unknown client or bad credentials")
    if client.secret is None:
        if secret:
            raise InvalidClient("this is a public client; it has no secret")
    elif secret is None or not hmac.compare_digest(
        secret.encode(), client.secret.get_secret_value().encode()
    ):
        raise InvalidClient("unknown client or bad credentials")
    structlog.contextvars.bind_contextvars(client_id=client.id)
    return client
