"""``/authorize`` request validation, as a list of small named checks (OIDC Core §3.1.2.1).

Order matters (RFC 6749 §4.1.2.1): the client and its redirect URI are validated first, and
until both are known good every error is a page, never a redirect (no open redirect).
After that, errors are redirected to the client with ``state`` and ``iss`` (RFC 9207).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.settings import ClientConfig, Settings

from broker.http.errors import (
    InvalidRequest,
    InvalidScope,
    LoginRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    UnsupportedResponseType,
)
from broker.http.forms import decimal
from broker.oauth.dashboard_client import builtin_client

# RFC 7636 §4.2; matched whole (fullmatch: "$" would also match before a trailing newline).
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


class ClientRejected(Exception):
    """Unknown client or unregistered redirect URI: answered with an error page."""

    def __init__(self, title: str, description: str) -> None:
        super().__init__(description)
        self.title = title
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    client: ClientConfig
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    provider: str | None
    response_mode: str | None = None
    prompt: str | None = None  # login / consent / select_account, passed to the upstream
    max_age: int | None = None


def validate_client(settings: Settings, params: Mapping[str, str]) -> tuple[ClientConfig, str]:
    """docs/security.md "Exact redirect URIs": the client must exist and the redirect URI match a
    registered one exactly."""
    client_id = params.get("client_id")
    if not client_id:
        raise ClientRejected("Invalid request", "The request has no client_id.")
    # The configured clients, and the dashboard's built-in one (broker.oauth.dashboard_client).
    client = settings.client(client_id) or builtin_client(settings, client_id)
    if client is None:
        raise ClientRejected("Unknown application", "This application is not registered.")
    if not client.signs_users_in:
        # A service (client_credentials only) has no redirect URI to send anything to.
        raise ClientRejected(
            "Not a sign-in application", "This application does not sign users in."
        )
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:  # OIDC Core §3.1.2.1: required
        raise ClientRejected("Invalid request", "The request has no redirect_uri.")
    if redirect_uri not in client.redirect_uris:  # exact string match, RFC 9700 §2.1
        raise ClientRejected(
            "Invalid redirect URI", "The redirect URI is not registered for this application."
        )
    return client, redirect_uri


def _check_response_type(params: Mapping[str, str]) -> None:
    response_type = params.get("response_type")
    if not response_type:
        raise InvalidRequest("response_type is required")
    if response_type != "code":
        raise UnsupportedResponseType(
            "only the authorization code flow (response_type=code) is supported"
        )


def response_mode(params: Mapping[str, str]) -> str | None:
    """``query`` (the default for the code flow) or ``form_post``; None when unsupported."""
    mode = params.get("response_mode", "query")
    return mode if mode in ("query", "form_post") else None


def _check_unsupported(params: Mapping[str, str]) -> None:
    if "request" in params:
        raise RequestNotSupported("request objects are not supported")
    if "request_uri" in params:
        raise RequestUriNotSupported("request_uri is not supported")
    if response_mode(params) is None and "response_mode" in params:
        raise InvalidRequest("response_mode must be query or form_post")


_PROMPTS = ("login", "consent", "select_account")
MAX_AGE_LIMIT = 10 * 365 * 86400


def _check_prompt(params: Mapping[str, str]) -> str | None:
    prompts = params.get("prompt", "").split()
    if "none" in prompts:
        if len(prompts) > 1:
            raise InvalidRequest("prompt=none cannot be combined with other values")
        # Every login goes through the upstream; there is no silent broker session to reuse.
        raise LoginRequired("the user must sign in")
    unknown = [value for value in prompts if value not in _PROMPTS]
    if unknown:
        raise InvalidRequest(f"unsupported prompt value {unknown[0]!r}")
    return " ".join(dict.fromkeys(prompts)) or None


def _check_max_age(params: Mapping[str, str]) -> int | None:
    value = params.get("max_age")
    if value is None:
        return None
    seconds = decimal(value)
    if seconds is None or seconds > MAX_AGE_LIMIT:
        raise InvalidRequest("max_age must be a non-negative number of seconds")
    return seconds


def _check_kept_text(params: Mapping[str, str]) -> None:
    """``state`` and ``nonce`` are kept as sent with the login in flight, and PostgreSQL text
    cannot hold NUL (the insert raised DataError: a 500). Neither may have one anyway: RFC 6749
    Appendix A.5 makes ``state`` printable ASCII."""
    for name in ("state", "nonce"):
        if "\x00" in params.get(name, ""):
            raise InvalidRequest(f"{name} must not contain NUL")


def _granted_scope(client: ClientConfig, params: Mapping[str, str]) -> str:
    requested = params.get("scope", "").split()
    if "openid" not in requested:
        raise InvalidScope("the openid scope is required")
    granted = [scope for scope in dict.fromkeys(requested) if scope in client.scopes]
    return " ".join(granted)


def _check_pkce(client: ClientConfig, params: Mapping[str, str]) -> tuple[str | None, str | None]:
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise InvalidRequest("code_challenge_method without code_challenge")
        if client.is_public:
            # RFC 9700 §2.1.1: public clients must use PKCE.
            raise InvalidRequest("public clients must send a PKCE code_challenge (S256)")
        return None, None
    if method != "S256":
        # `plain` (and the RFC 7636 default when the method is omitted) is refused.
        raise InvalidRequest("code_challenge_method must be S256")
    if not _PKCE_CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("code_challenge is malformed")
    return challenge, method


def validate_authorization_request(
    settings: Settings, client: ClientConfig, redirect_uri: str, params: Mapping[str, str]
) -> AuthorizationRequest:
    """Run the checks after the client is known; raises ``OAuthError`` to redirect back."""
    _check_response_type(params)
    _check_unsupported(params)
    _check_kept_text(params)
    prompt = _check_prompt(params)
    max_age = _check_max_age(params)
    scope = _granted_scope(client, params)
    challenge, method = _check_pkce(client, params)
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scope=scope,
        state=params.get("state"),
        nonce=params.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method,
        provider=params.get("provider"),
        response_mode=response_mode(params),
        prompt=prompt,
        max_age=max_age,
    )


def redirect_with(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """Append response parameters to the client's redirect URI, keeping its own query."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
