"""The token endpoint's grant table: which grants there are, and which a client may use.

A grant the broker does not know is ``unsupported_grant_type``; one it knows but the client's
``grant_types`` do not list is ``unauthorized_client`` (RFC 6749 §5.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from shared.runtime import Runtime
from shared.settings import ClientConfig

from broker.http.context import RequestMeta
from broker.http.errors import UnauthorizedClient, UnsupportedGrantType
from broker.oauth.client_credentials import client_credentials_grant
from broker.oauth.grants import IssuedTokens, code_grant, refresh_grant

Grant = Callable[[Runtime, ClientConfig, Mapping[str, str], RequestMeta], Awaitable[IssuedTokens]]
GRANTS: dict[str, Grant] = {
    "authorization_code": code_grant,
    "refresh_token": refresh_grant,
    "client_credentials": client_credentials_grant,
}


def grant_for(client: ClientConfig, grant_type: str) -> Grant:
    """The grant ``grant_type`` names, if this client may use it."""
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise UnsupportedGrantType(f"supported: {', '.join(GRANTS)}")
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
    return handler
