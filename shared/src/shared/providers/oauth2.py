"""The OAuth 2.0 core every provider delegates to: authorize URLs, PKCE, code exchange, refresh.

authlib's ``AsyncOAuth2Client`` keeps the current token on the instance, so one client is made per
operation and never shared between users. Every httpx/authlib failure is translated here into a
``shared.providers.errors`` exception.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from opentelemetry.trace import Tracer

from shared.client_tls import client_tls_context
from shared.clock import Clock
from shared.providers.base import LoginStart, UpstreamTokens
from shared.providers.errors import (
    ProviderDenied,
    ProviderInvalidResponse,
    ProviderRejected,
    ProviderUnavailable,
)
from shared.tracing.http_client import TracedTransport

# Errors a token endpoint uses to say "this grant is dead" (RFC 6749 §5.2; GitHub's own name).
_REJECTED = frozenset(
    {"invalid_grant", "invalid_token", "unauthorized_client", "bad_refresh_token"}
)
# For a refresh only these do (docs/security.md "Upstream refresh"): `unauthorized_client` says the
# *client* may not
# use the grant — a configuration change at the upstream, which must not revoke every link.
_REFRESH_REJECTED = frozenset({"invalid_grant", "bad_refresh_token"})


@dataclass(frozen=True)
class OAuth2Endpoints:
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None = None


@dataclass(frozen=True)
class OAuth2Credentials:
    client_id: str
    client_secret: str | None
    auth_method: str  # client_secret_basic | client_secret_post | none


def _client_secret_basic(
    client: Any, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.

    authlib sends them raw, which breaks secrets with ``+``, ``%`` or ``:`` at providers that
    decode per the RFC (Ory Hydra, node-oidc-provider).
    """
    credentials = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return uri, headers, body


def parse_retry_after(value: str | None) -> float | None:
    """RFC 9110 §10.2.3: seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _unavailable_before_parsing(response: httpx2.Response) -> httpx2.Response:
    """A 5xx or 429 token response is "try later", with its ``Retry-After`` (docs/security.md
    "Upstream refresh") —
    authlib would turn an error body into an ``OAuthError`` and drop the header."""
    status = response.status_code
    if status >= 500 or status == 429:
        raise ProviderUnavailable(
            f"token endpoint answered HTTP {status}",
            parse_retry_after(response.headers.get("retry-after")),
        )
    return response


@contextlib.asynccontextmanager
async def translated_errors(
    operation: str, rejected: frozenset[str] = _REJECTED
) -> AsyncIterator[None]:
    """Turn transport, HTTP and OAuth errors of one upstream call into provider errors."""
    try:
        yield
    except OAuthError as exc:
        error = str(exc.error or "invalid_response")
        if error in rejected:
            raise ProviderRejected(error, exc.description) from None
        if error in ("temporarily_unavailable", "server_error", "slow_down"):
            raise ProviderUnavailable(f"{operation}: upstream answered {error}") from None
        if error == "access_denied":
            raise ProviderDenied(error, exc.description) from None
        raise ProviderInvalidResponse(f"{operation}: upstream answered {error}") from None
    except httpx2.HTTPStatusError as exc:
        status = exc.response.status_code
        if status >= 500 or status == 429:
            raise ProviderUnavailable(
                f"{operation}: upstream answered HTTP {status}",
                parse_retry_after(exc.response.headers.get("retry-after")),
            ) from None
        raise ProviderInvalidResponse(f"{operation}: upstream answered HTTP {status}") from None
    except httpx2.TimeoutException:
        raise ProviderUnavailable(f"{operation}: upstream timed out") from None
    except httpx2.TransportError as exc:
        raise ProviderUnavailable(f"{operation}: {type(exc).__name__}") from None
    except (ValueError, TypeError, KeyError) as exc:
        # authlib: the token response was not a JSON object, or a field had the wrong type
        # (e.g. "expires_in": [3600]).
        raise ProviderInvalidResponse(
            f"{operation}: malformed response ({type(exc).__name__})"
        ) from None


class _KeptOpen(httpx2.AsyncBaseTransport):
    """The transports of one long-lived client, lent to short-lived ones; their ``aclose``
    leaves them open for the next.

    Given no transport, the long-lived client is built with ``trust_env`` so ``HTTPS_PROXY`` /
    ``NO_PROXY`` apply as they would to any client; requests go straight to the transport its
    mounts choose (``_transport_for_url``), never through its cookie jar.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport | None) -> None:
        self._transport = transport
        self._pool = (
            None
            if transport is not None
            else httpx2.AsyncClient(trust_env=True, verify=client_tls_context())
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._pool is not None:
            return await self._pool._transport_for_url(request.url).handle_async_request(request)
        assert self._transport is not None
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None  # a borrowing client closes nothing; the flow closes the pool

    async def close_pool(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class OAuth2Flow:
    """Authorization-code flow with PKCE S256 against one upstream client registration."""

    def __init__(
        self,
        credentials: OAuth2Credentials,
        *,
        scopes: tuple[str, ...],
        clock: Clock,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._credentials = credentials
        self._scopes = scopes
        self._clock = clock
        self._timeout = timeout
        # One transport for every operation's client: its kept-alive connections (and the
        # process's TLS context, shared/client_tls.py) are shared; the clients are not.
        self._transport = _KeptOpen(transport)
        # What the clients send through: with tracing on, a span per request (never its body,
        # which carries the code, the verifier, refresh tokens and the client secret).
        self._sending: httpx2.AsyncBaseTransport = (
            self._transport if tracer is None else TracedTransport(self._transport, tracer)
        )

    async def aclose(self) -> None:
        """Close the kept-alive upstream connections (at shutdown)."""
        await self._transport.close_pool()

    @property
    def client_id(self) -> str:
        return self._credentials.client_id

    def _client(self) -> AsyncOAuth2Client:
        # One client per operation: authlib stores tokens on the instance (docs/security.md "Library
        # traps").
        client = AsyncOAuth2Client(
            client_id=self._credentials.client_id,
            client_secret=self._credentials.client_secret,
            token_endpoint_auth_method=self._credentials.auth_method,
            scope=" ".join(self._scopes),
            code_challenge_method="S256",
            timeout=self._timeout,
            follow_redirects=False,
            transport=self._sending,
        )
        client.register_client_auth_method(("client_secret_basic", _client_secret_basic))
        for hook in ("access_token_response", "refresh_token_response"):
            client.register_compliance_hook(hook, _unavailable_before_parsing)
        return client

    def authorization_url(
        self,
        endpoints: OAuth2Endpoints,
        start: LoginStart,
        extra_params: Mapping[str, str] | None = None,
    ) -> str:
        """The upstream authorize URL, always with PKCE S256 (authlib leaves it off otherwise)."""
        client = self._client()
        params: dict[str, str] = dict(extra_params or {})
        if start.nonce:
            params["nonce"] = start.nonce
        if start.prompt:
            params["prompt"] = start.prompt
        if start.max_age is not None:
            params["max_age"] = str(start.max_age)
        url, _state = client.create_authorization_url(
            endpoints.authorization_endpoint,
            state=start.state,
            code_verifier=start.code_verifier,
            redirect_uri=start.redirect_uri,
            **params,
        )
        return str(url)

    async def exchange_code(
        self, endpoints: OAuth2Endpoints, code: str, start: LoginStart
    ) -> dict[str, Any]:
        async with translated_errors("code exchange"), self._client() as client:
            token = await client.fetch_token(
                endpoints.token_endpoint,
                grant_type="authorization_code",
                code=code,
                redirect_uri=start.redirect_uri,
                code_verifier=start.code_verifier,
            )
        return _require_access_token(dict(token))

    async def refresh(self, endpoints: OAuth2Endpoints, refresh_token: str) -> dict[str, Any]:
        async with (
            translated_errors("token refresh", _REFRESH_REJECTED),
            self._client() as client,
        ):
            token = await client.refresh_token(
                endpoints.token_endpoint, refresh_token=refresh_token
            )
        return _require_access_token(dict(token))

    async def revoke(self, endpoints: OAuth2Endpoints, token: str) -> None:
        if not endpoints.revocation_endpoint:
            return
        async with translated_errors("token revocation"), self._client() as client:
            response = await client.revoke_token(endpoints.revocation_endpoint, token=token)
            if response.status_code >= 400:
                response.raise_for_status()

    def tokens_from(
        self, token: Mapping[str, Any], previous_refresh: str | None = None
    ) -> UpstreamTokens:
        """Normalize a token response; expiry is decided per response, never per provider."""
        now = self._clock.now()
        expires_at = None
        expires_in = token.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            expires_at = now + dt.timedelta(seconds=float(expires_in))
        refresh_expires_at = None
        refresh_in = token.get("refresh_token_expires_in")
        if isinstance(refresh_in, int | float) and not isinstance(refresh_in, bool):
            refresh_expires_at = now + dt.timedelta(seconds=float(refresh_in))
        return UpstreamTokens(
            access_token=str(token["access_token"]),
            token_type=str(token.get("token_type") or "Bearer"),
            refresh_token=_optional_str(token.get("refresh_token")) or previous_refresh,
            id_token=_optional_str(token.get("id_token")),
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
            scope=_optional_str(token.get("scope")),
        )


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _require_access_token(token: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise ProviderInvalidResponse("the token response has no access_token")
    return token


def check_callback(
    params: Mapping[str, str], *, expected_issuer: str | None, iss_required: bool
) -> str:
    """Check an authorization response and return its ``code`` (RFC 6749 §4.1.2, RFC 9207)."""
    issuer = params.get("iss")
    if issuer is not None or iss_required:
        # RFC 9207 §2.4: a missing or different `iss` means a mix-up; stop before any token call.
        if expected_issuer is None or issuer != expected_issuer:
            raise ProviderInvalidResponse("the authorization response came from another issuer")
    if "error" in params:
        raise ProviderDenied(params["error"][:100], params.get("error_description", "")[:300])
    code = params.get("code")
    if not code:
        raise ProviderInvalidResponse("the authorization response has no code")
    return code
