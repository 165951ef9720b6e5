"""A small but real OpenID Provider that plays an upstream identity provider in tests.

It speaks OpenID Connect over real HTTP, the way Google or Keycloak would:

* discovery (``/.well-known/openid-configuration``) and a public JWKS (``/jwks``);
* an authorization endpoint that auto-approves (no UI) and only accepts the
  authorization code flow with PKCE ``S256``;
* a token endpoint for the ``authorization_code`` and ``refresh_token`` grants, with
  ``client_secret_basic`` and ``client_secret_post`` client authentication, signed ID
  tokens and refresh token rotation;
* userinfo and RFC 7009 token revocation.

A JSON control API under ``/_control/`` lets a test choose the user, make the next
response misbehave (wrong audience, bad signature, ...), change the issuer advertised by
discovery, and inspect the requests that reached the token endpoint.

With ``google=True`` (``--google``) it behaves like Google where Google differs: ID tokens
carry ``hd`` and a plain-string ``aud``; the code exchange returns a refresh token only for an
``access_type=offline`` request that is the user's first offline grant to the client or says
``prompt=consent`` (at most 100 live refresh tokens per user and client, the oldest silently
revoked); refresh grants never rotate the refresh token; the token response reports Google's
scope URLs; and ``POST /_control/google {"bare_iss": true}`` makes ID tokens carry ``iss``
without its scheme (``accounts.google.com``), as Google sometimes does.

For the background sync worker's tests the control API can also mint grants, fail refreshes
on a script, log refreshes and change a user's profile upstream:

* ``POST /_control/grants`` ``{"client_id": str, "user": {"sub": str, ...}, "count": 1,
  "scope": "openid email profile offline_access", "access_token_lifetime": int}`` mints
  ``count`` (1 to 5000) grants without a browser login and answers ``{"grants": [...]}``, each
  item the body a token response would have carried (``access_token``, ``token_type``,
  ``expires_in``, ``refresh_token``, ``scope`` and, when ``openid`` is in scope,
  ``id_token``). ``access_token_lifetime`` (seconds, default the provider's
  ``--access-token-lifetime``) applies to these access tokens only; refreshing a grant issues
  access tokens with the provider's default lifetime.
* ``POST /_control/refresh_faults`` ``{"mode": ..., "count": 1, "seconds": 1.0}`` appends a
  fault to a script that refresh_token grants (only those) consume in order, one count per
  request, after client authentication and before the refresh token is looked at. ``count``
  -1 repeats the fault until the script is cleared with ``{"mode": "none"}``. Modes:
  ``unavailable`` answers 503 ``{"error": "temporarily_unavailable", ...}``; ``retry_after``
  answers 429 with ``Retry-After: <seconds>``; ``invalid_grant`` drops the presented refresh
  token and answers 400 ``{"error": "invalid_grant", ...}``; ``hang`` waits ``seconds`` and
  then answers normally, but if the client hangs up meanwhile it stops waiting and leaves the
  token untouched; ``slow`` waits ``seconds`` and then answers normally even when the client
  has gone (so the token is rotated and the response lost). The waits do not block other
  requests. The answer is ``{"faults": [{"mode", "count", "seconds"}, ...]}``, the script left.
* ``GET /_control/refresh_log`` answers ``{"refreshes": [{"refresh_token", "outcome", "at",
  "fault", "status"}, ...], "counts": {refresh_token: times presented}}`` for every
  refresh_token grant request since the last reset, oldest first, logged when it arrives.
  ``outcome`` is ``ok`` (tokens issued), ``unavailable`` (503), ``retry_after`` (429),
  ``invalid_grant`` (400 ``invalid_grant``, whether scripted or because the token is unknown,
  used or revoked) or ``unknown`` (still waiting, abandoned by the client during a hang, or
  another error); ``fault`` is the scripted mode the request consumed or null, ``status``
  the HTTP status answered or null, and ``at`` the arrival time (epoch seconds).
* ``POST /_control/users/{sub}`` with a JSON object of claims changes that user's profile
  upstream: from then on userinfo for any access token of the subject, and every ID token
  issued for it, carry these claims merged over the ones the grant was issued with (``sub``
  never changes; a null value removes the claim). Successive calls accumulate. The answer is
  ``{"sub": sub, "changes": {...}}``, all the changes so far.

* ``GET /_control/revocations`` answers ``{"revocations": [{"token", "token_type_hint",
  "client_id", "revoked"}, ...]}``: every RFC 7009 revocation request since the last reset
  that authenticated its client, oldest first; ``revoked`` says what the token was
  (``access_token`` or ``refresh_token``, each dropped at once) or null (unknown, or another
  client's: nothing revoked).

``POST /_control/reset`` also clears the fault script, the refresh log, the revocations and
profile changes.

When the issuer URL has a path (``http://127.0.0.1:9100/realms/test``), the OpenID
endpoints are served under that path; the control API always stays at ``/_control/``.

Run it from the repository root with ``python -m tests.support.upstream_idp --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

SigningKey = RSAKey | ECKey

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_HASHES: dict[str, Callable[[bytes], Any]] = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}

AUTHORIZATION_CODE_LIFETIME = 60
"""Seconds an authorization code stays redeemable."""

ID_TOKEN_LIFETIME = 300
"""Seconds between ``iat`` and ``exp`` of every ID token."""

MISBEHAVE_MODES = frozenset(
    {
        "wrong_aud",
        "wrong_iss",
        "bad_nonce",
        "expired",
        "bad_signature",
        "alg_none",
        "userinfo_sub_mismatch",
        "token_error_500",
        "deny",
    }
)
"""Modes accepted by ``POST /_control/misbehave``; each one applies once."""

OTHER_CLIENT_ID = "some-other-client"
"""Audience used by the ``wrong_aud`` misbehaviour."""

OTHER_SUBJECT = "someone-else-sub"
"""Subject returned by userinfo under the ``userinfo_sub_mismatch`` misbehaviour."""

REFRESH_FAULT_MODES = frozenset({"unavailable", "invalid_grant", "retry_after", "hang", "slow"})
"""Modes accepted by ``POST /_control/refresh_faults`` (``none`` clears the script)."""

MAX_CONTROL_GRANTS = 5000
"""Most grants one ``POST /_control/grants`` mints."""

DEFAULT_GRANT_SCOPE = "openid email profile offline_access"
"""Scope of the grants ``POST /_control/grants`` mints unless told otherwise."""

_DISCONNECT_POLL_SECONDS = 0.05
_GRANTS_PER_YIELD = 50

GOOGLE_REFRESH_TOKEN_LIMIT = 100
"""Live refresh tokens Google keeps per user and client; issuing one more revokes the oldest."""

_GOOGLE_SCOPE_URLS = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}

_ID_TOKEN_USER_CLAIMS = (
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "picture",
)
_SUPPORTED_CLAIMS = [
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    *_ID_TOKEN_USER_CLAIMS,
    "preferred_username",
]
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_PKCE_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def default_user() -> dict[str, Any]:
    """Return the claims of the user authorizations are issued for until a test picks one."""
    return {
        "sub": "alice-sub",
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Alice Example",
        "given_name": "Alice",
        "family_name": "Example",
        "picture": "https://example.com/alice.png",
        "preferred_username": "alice",
    }


@dataclass
class _AuthorizationCode:
    """What an authorization code was issued for."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    user: dict[str, Any]
    auth_time: int
    expires_at: float
    # Google flavour: whether redeeming the code returns a refresh token.
    offline: bool = True


@dataclass
class _AccessToken:
    """An opaque access token and the userinfo claims it unlocks."""

    client_id: str
    scope: str
    subject: str
    claims: dict[str, Any]
    expires_at: float


@dataclass
class _RefreshToken:
    """A refresh token and the grant it can renew."""

    client_id: str
    scope: str
    user: dict[str, Any]
    auth_time: int


@dataclass
class _RefreshFault:
    """A scripted failure of the next ``count`` refresh_token grants (-1: until cleared)."""

    mode: str
    count: int
    seconds: float


@dataclass
class _RefreshAttempt:
    """One refresh_token grant request, as ``GET /_control/refresh_log`` reports it."""

    refresh_token: str | None
    at: float
    fault: str | None = None
    status: int | None = None
    outcome: str = "unknown"

    def record(self, response: Response) -> Response:
        """Note what ``response`` answers and return it."""
        self.status = status = response.status_code
        if status == 200:
            self.outcome = "ok"
        elif status == 503:
            self.outcome = "unavailable"
        elif status == 429:
            self.outcome = "retry_after"
        elif status == 400 and json.loads(bytes(response.body))["error"] == "invalid_grant":
            self.outcome = "invalid_grant"
        return response


@dataclass
class _ProviderState:
    """Mutable state of one provider instance."""

    access_token_lifetime: int
    user: dict[str, Any] = field(default_factory=default_user)
    misbehave: str | None = None
    discovery_issuer: str | None = None
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    # Seconds since the user last typed a password here (an existing upstream SSO session).
    session_age: int = 0
    # A sloppy OP: answers prompt=login and max_age from the old session anyway.
    ignore_reauthentication: bool = False
    # Google flavour: ID tokens carry ``iss`` without the scheme.
    google_bare_iss: bool = False
    # Google flavour: the subjects that already granted the client offline access.
    offline_consented: set[str] = field(default_factory=set)
    # Google flavour: each subject's live refresh tokens, oldest first.
    refresh_tokens_by_subject: dict[str, list[str]] = field(default_factory=dict)
    # What the next refresh_token grants do instead of (or before) answering normally.
    refresh_faults: list[_RefreshFault] = field(default_factory=list)
    refresh_log: list[_RefreshAttempt] = field(default_factory=list)
    # Claims changed upstream since the grants were issued, by subject (None: claim removed).
    profile_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every authenticated RFC 7009 revocation request, oldest first.
    revocations: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        """Restore the default user and behaviour, drop all grants and recorded requests."""
        self.user = default_user()
        self.misbehave = None
        self.discovery_issuer = None
        self.codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.token_requests.clear()
        self.authorize_requests.clear()
        self.session_age = 0
        self.ignore_reauthentication = False
        self.google_bare_iss = False
        self.offline_consented.clear()
        self.refresh_tokens_by_subject.clear()
        self.refresh_faults.clear()
        self.refresh_log.clear()
        self.profile_changes.clear()
        self.revocations.clear()

    def take_misbehaviour(self, *modes: str) -> str | None:
        """Consume the pending misbehaviour if it is one of ``modes``."""
        if self.misbehave in modes:
            mode, self.misbehave = self.misbehave, None
            return mode
        return None

    def take_refresh_fault(self) -> _RefreshFault | None:
        """Consume one count of the first scripted refresh fault, if any."""
        if not self.refresh_faults:
            return None
        fault = self.refresh_faults[0]
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                self.refresh_faults.pop(0)
        return fault

    def current_profile(self, subject: str, claims: dict[str, Any]) -> dict[str, Any]:
        """``claims`` with the profile changes made upstream for ``subject`` since."""
        profile = dict(claims)
        for name, value in self.profile_changes.get(subject, {}).items():
            if value is None:
                profile.pop(name, None)
            else:
                profile[name] = value
        return profile


def _b64url(data: bytes) -> str:
    """Base64url-encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    """Return the PKCE S256 challenge for ``verifier`` (RFC 7636 §4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _left_half_hash(value: str, alg: str) -> str:
    """Return an OIDC ``at_hash``: the left half of the alg's hash of ``value``, base64url."""
    digest = _HASHES[alg[-3:]](value.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def _generate_key(alg: str, kid: str) -> SigningKey:
    """Generate a private signing key usable with ``alg``."""
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg in _RSA_ALGORITHMS:
        return RSAKey.generate_key(2048, parameters=parameters)
    return ECKey.generate_key(_EC_CURVES[alg], parameters=parameters)


def _unsigned_jwt(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Serialize an unsecured JWT (``alg: none``, empty signature)."""
    segments = [
        _b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
        for part in (header, claims)
    ]
    return ".".join([*segments, ""])


def _google_scope(scope: str) -> str:
    """The ``scope`` Google reports: ``email``/``profile`` as their userinfo scope URLs."""
    return " ".join(_GOOGLE_SCOPE_URLS.get(name, name) for name in scope.split())


def _form_value(form: FormData, name: str) -> str | None:
    """Return a text form field, or None when it is absent or a file."""
    value = form.get(name)
    return value if isinstance(value, str) else None


def _oauth_error(
    error: str,
    description: str,
    *,
    status_code: int = 400,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an RFC 6749 §5.2 error response."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status_code,
        headers={**_NO_STORE, **(headers or {})},
    )


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    """302-redirect to ``uri`` with ``params`` added to its query string."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return RedirectResponse(location, status_code=302, headers=_NO_STORE)


def _is_http_url(value: str) -> bool:
    """Tell whether ``value`` is an absolute http(s) URL without a fragment."""
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment


async def _json_object(request: Request) -> dict[str, Any] | None:
    """Parse the request body as a JSON object, or return None."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _non_negative_number(value: Any) -> bool:
    """Tell whether ``value`` is a JSON number (not a boolean) that is zero or more."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


async def _wait_for_client(request: Request, seconds: float) -> bool:
    """Wait ``seconds`` without blocking other requests; False once the client has hung up."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, _DISCONNECT_POLL_SECONDS))
        if await request.is_disconnected():
            return False
    return True


def create_app(
    issuer: str,
    *,
    client_id: str = "broker",
    client_secret: str = "broker-secret",
    signing_alg: str = "RS256",
    access_token_lifetime: int = 3600,
    google: bool = False,
) -> Starlette:
    """Build the provider as a Starlette app.

    ``issuer`` is the exact ``iss`` value and the base URL of every endpoint. The provider
    knows one confidential client (``client_id``/``client_secret``) and signs ID tokens
    with a fresh key for ``signing_alg`` (RS256/384/512, PS256/384/512, ES256/384/512).
    ``google`` turns on Google's ways (see the module docstring).
    """
    if signing_alg not in _RSA_ALGORITHMS and signing_alg not in _EC_CURVES:
        raise ValueError(f"unsupported signing algorithm: {signing_alg}")
    kid = f"upstream-{signing_alg.lower()}-{secrets.token_hex(4)}"
    signing_key = _generate_key(signing_alg, kid)
    base_url = issuer.rstrip("/")
    state = _ProviderState(access_token_lifetime=access_token_lifetime)
    bare_issuer = issuer.split("://", 1)[-1]
    user_claims = (*_ID_TOKEN_USER_CLAIMS, "hd") if google else _ID_TOKEN_USER_CLAIMS

    def authenticate_client(request: Request, form: FormData) -> str | Response:
        """Authenticate the client (RFC 6749 §2.3.1) and return its id or an error response."""
        authorization = request.headers.get("authorization", "")
        posted_id = _form_value(form, "client_id")
        posted_secret = _form_value(form, "client_secret")
        basic_challenge = {"WWW-Authenticate": 'Basic realm="upstream-idp"'}
        if authorization[:6].lower() == "basic ":
            if posted_secret is not None:
                return _oauth_error(
                    "invalid_request", "more than one client authentication method used"
                )
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            raw_id, separator, raw_secret = decoded.partition(":")
            if not separator:
                return _oauth_error(
                    "invalid_client",
                    "malformed Basic credentials",
                    status_code=401,
                    headers=basic_challenge,
                )
            presented_id, presented_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if posted_id is not None and posted_id != presented_id:
                return _oauth_error("invalid_request", "client_id does not match credentials")
        elif posted_id is not None and posted_secret is not None:
            presented_id, presented_secret = posted_id, posted_secret
        else:
            return _oauth_error(
                "invalid_client",
                "client authentication required",
                status_code=401,
                headers=basic_challenge,
            )
        id_ok = secrets.compare_digest(presented_id.encode(), client_id.encode())
        secret_ok = secrets.compare_digest(presented_secret.encode(), client_secret.encode())
        if not (id_ok and secret_ok):
            return _oauth_error(
                "invalid_client",
                "client authentication failed",
                status_code=401,
                headers=basic_challenge,
            )
        return presented_id

    def issue_id_token(
        *,
        user: dict[str, Any],
        nonce: str | None,
        auth_time: int,
        access_token: str,
        misbehave: str | None = None,
    ) -> str:
        """Sign an ID token for ``user``, optionally broken the way ``misbehave`` asks."""
        now = int(time.time())
        audience = OTHER_CLIENT_ID if misbehave == "wrong_aud" else client_id
        token_issuer = bare_issuer if google and state.google_bare_iss else issuer
        claims: dict[str, Any] = {
            "iss": f"{base_url}/not-the-issuer" if misbehave == "wrong_iss" else token_issuer,
            "sub": user["sub"],
            # Google's aud is the client id itself, not a list.
            "aud": audience if google else [audience],
            "azp": audience,
            "exp": now + ID_TOKEN_LIFETIME,
            "iat": now,
            "auth_time": auth_time,
            "at_hash": _left_half_hash(access_token, signing_alg),
        }
        if misbehave == "bad_nonce":
            claims["nonce"] = f"not-{nonce or 'a-nonce'}-{secrets.token_hex(4)}"
        elif nonce is not None:
            claims["nonce"] = nonce
        if misbehave == "expired":
            claims["iat"] = now - 2 * ID_TOKEN_LIFETIME
            claims["exp"] = now - ID_TOKEN_LIFETIME
        for name in user_claims:
            if name in user:
                claims[name] = user[name]
        if misbehave == "alg_none":
            return _unsigned_jwt({"alg": "none", "typ": "JWT"}, claims)
        key = _generate_key(signing_alg, kid) if misbehave == "bad_signature" else signing_key
        header = {"alg": signing_alg, "kid": kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[signing_alg])

    def mint_tokens(
        *,
        client: str,
        scope: str,
        user: dict[str, Any],
        auth_time: int,
        nonce: str | None,
        misbehave: str | None = None,
        with_refresh_token: bool = True,
        access_token_lifetime: int | None = None,
    ) -> dict[str, Any]:
        """Mint an access token, a refresh token and an ID token; return the token response body.

        ``access_token_lifetime`` defaults to the provider's. ``user`` gets the profile changes
        made upstream for its subject.
        """
        lifetime = access_token_lifetime
        if lifetime is None:
            lifetime = state.access_token_lifetime
        user = state.current_profile(user["sub"], user)
        access_token = secrets.token_urlsafe(32)
        userinfo = dict(user)
        if misbehave == "userinfo_sub_mismatch":
            userinfo["sub"] = OTHER_SUBJECT
        state.access_tokens[access_token] = _AccessToken(
            client_id=client,
            scope=scope,
            subject=user["sub"],
            claims=userinfo,
            expires_at=time.time() + lifetime,
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        if with_refresh_token:
            refresh_token = secrets.token_urlsafe(32)
            state.refresh_tokens[refresh_token] = _RefreshToken(
                client_id=client, scope=scope, user=dict(user), auth_time=auth_time
            )
            body["refresh_token"] = refresh_token
            if google:
                live = state.refresh_tokens_by_subject.setdefault(user["sub"], [])
                live.append(refresh_token)
                while len(live) > GOOGLE_REFRESH_TOKEN_LIMIT:
                    state.refresh_tokens.pop(live.pop(0), None)
        body["scope"] = _google_scope(scope) if google else scope
        if "openid" in scope.split():
            body["id_token"] = issue_id_token(
                user=user,
                nonce=nonce,
                auth_time=auth_time,
                access_token=access_token,
                misbehave=misbehave,
            )
        return body

    def issue_tokens(**grant: Any) -> JSONResponse:
        """Answer a token request with the tokens :func:`mint_tokens` mints for ``grant``."""
        return JSONResponse(mint_tokens(**grant), headers=_NO_STORE)

    async def discovery(request: Request) -> Response:
        """Serve the OpenID Provider metadata."""
        return JSONResponse(
            {
                "issuer": state.discovery_issuer or issuer,
                "authorization_endpoint": f"{base_url}/authorize",
                "token_endpoint": f"{base_url}/token",
                "userinfo_endpoint": f"{base_url}/userinfo",
                "jwks_uri": f"{base_url}/jwks",
                "revocation_endpoint": f"{base_url}/revoke",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [signing_alg],
                "scopes_supported": ["openid", "email", "profile", "offline_access"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "revocation_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "claims_supported": _SUPPORTED_CLAIMS,
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def jwks(request: Request) -> Response:
        """Serve the public signing key set."""
        public = signing_key.as_dict(private=False)
        public.update({"kid": kid, "alg": signing_alg, "use": "sig"})
        return JSONResponse({"keys": [public]})

    async def authorize(request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        query = request.query_params
        if query.get("client_id") != client_id:
            return _oauth_error("invalid_request", "unknown client_id")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not _is_http_url(redirect_uri):
            return _oauth_error("invalid_request", "missing or invalid redirect_uri")
        request_state = query.get("state")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description}
            if request_state is not None:
                params["state"] = request_state
            params["iss"] = issuer
            return _redirect(redirect_uri, params)

        repeated = [name for name in query if len(query.getlist(name)) > 1]
        if repeated:
            return fail("invalid_request", f"parameter repeated: {repeated[0]}")
        if query.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        if not request_state:
            return fail("invalid_request", "state is required")
        scope = query.get("scope", "")
        if "openid" not in scope.split():
            return fail("invalid_scope", "the openid scope is required")
        code_challenge = query.get("code_challenge")
        if not code_challenge or query.get("code_challenge_method") != "S256":
            return fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if not _PKCE_S256_CHALLENGE.fullmatch(code_challenge):
            return fail("invalid_request", "malformed code_challenge")
        if state.take_misbehaviour("deny"):
            return fail("access_denied", "The resource owner denied the request")

        now = time.time()
        state.authorize_requests.append(dict(query))
        # Like a real OP with an SSO session: only prompt=login or a max_age shorter than the
        # session makes the user authenticate again.
        max_age = query.get("max_age")
        fresh = not state.ignore_reauthentication and (
            "login" in query.get("prompt", "").split()
            or (max_age is not None and max_age.isdigit() and int(max_age) < state.session_age)
        )
        authenticated_at = int(now) if fresh else int(now) - state.session_age
        # Google: a refresh token only for access_type=offline, and then only on the first
        # offline grant of this user to the client or when the consent screen is shown again.
        offline = True
        if google:
            subject = str(state.user["sub"])
            offline = query.get("access_type") == "offline" and (
                subject not in state.offline_consented
                or "consent" in query.get("prompt", "").split()
            )
            if query.get("access_type") == "offline":
                state.offline_consented.add(subject)
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code = secrets.token_urlsafe(32)
        state.codes[code] = _AuthorizationCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            nonce=query.get("nonce"),
            scope=scope,
            user=dict(state.user),
            auth_time=authenticated_at,
            expires_at=now + AUTHORIZATION_CODE_LIFETIME,
            offline=offline,
        )
        return _redirect(redirect_uri, {"code": code, "state": request_state, "iss": issuer})

    async def token(request: Request) -> Response:
        """Exchange an authorization code or a refresh token for tokens."""
        form = await request.form()
        state.token_requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "form": {name: value for name, value in form.items() if isinstance(value, str)},
            }
        )
        grant_type = _form_value(form, "grant_type")
        if grant_type == "refresh_token":
            attempt = _RefreshAttempt(
                refresh_token=_form_value(form, "refresh_token"), at=time.time()
            )
            state.refresh_log.append(attempt)
            response = await refresh(request, form, attempt)
            if response is None:
                # The client hung up during a hang: nothing was done and nobody is listening.
                return Response(status_code=499)
            return attempt.record(response)
        client = authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        if grant_type == "authorization_code":
            return redeem_code(client, form)
        if not grant_type:
            return _oauth_error("invalid_request", "grant_type is required")
        return _oauth_error("unsupported_grant_type", f"unsupported grant_type: {grant_type}")

    def redeem_code(client: str, form: FormData) -> Response:
        """Handle grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636 §4.6)."""
        if state.take_misbehaviour("token_error_500"):
            return JSONResponse(
                {"error": "server_error", "error_description": "simulated upstream failure"},
                status_code=500,
                headers=_NO_STORE,
            )
        code = _form_value(form, "code")
        if not code:
            return _oauth_error("invalid_request", "code is required")
        grant = state.codes.pop(code, None)
        if grant is None or grant.expires_at <= time.time():
            return _oauth_error("invalid_grant", "unknown, used or expired authorization code")
        if grant.client_id != client:
            return _oauth_error("invalid_grant", "code was issued to another client")
        if _form_value(form, "redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri does not match")
        verifier = _form_value(form, "code_verifier")
        if not verifier or not _PKCE_VERIFIER.fullmatch(verifier):
            return _oauth_error("invalid_grant", "missing or malformed code_verifier")
        if not secrets.compare_digest(_s256(verifier), grant.code_challenge):
            return _oauth_error("invalid_grant", "PKCE verification failed")
        return issue_tokens(
            client=client,
            scope=grant.scope,
            user=grant.user,
            auth_time=grant.auth_time,
            nonce=grant.nonce,
            misbehave=state.take_misbehaviour(*(MISBEHAVE_MODES - {"deny", "token_error_500"})),
            with_refresh_token=grant.offline,
        )

    async def refresh(
        request: Request, form: FormData, attempt: _RefreshAttempt
    ) -> Response | None:
        """Handle grant_type=refresh_token with rotation (RFC 6749 §6) and scripted faults.

        Returns None when the client hung up during a ``hang`` fault.
        """
        client = authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        presented = _form_value(form, "refresh_token")
        fault = state.take_refresh_fault()
        if fault is not None:
            attempt.fault = fault.mode
            if fault.mode == "unavailable":
                return JSONResponse(
                    {
                        "error": "temporarily_unavailable",
                        "error_description": "simulated upstream outage",
                    },
                    status_code=503,
                    headers=_NO_STORE,
                )
            if fault.mode == "retry_after":
                seconds = fault.seconds
                retry_after = f"{seconds:.0f}" if seconds.is_integer() else str(seconds)
                return _oauth_error(
                    "temporarily_unavailable",
                    "simulated rate limit",
                    status_code=429,
                    headers={"Retry-After": retry_after},
                )
            if fault.mode == "invalid_grant":
                if presented:
                    state.refresh_tokens.pop(presented, None)
                return _oauth_error("invalid_grant", "simulated refresh token revocation")
            if fault.mode == "hang":
                if not await _wait_for_client(request, fault.seconds):
                    return None
            else:
                await asyncio.sleep(fault.seconds)
        if not presented:
            return _oauth_error("invalid_request", "refresh_token is required")
        grant = state.refresh_tokens.get(presented)
        if grant is None or grant.client_id != client:
            return _oauth_error("invalid_grant", "unknown or revoked refresh token")
        scope = grant.scope
        requested = _form_value(form, "scope")
        if requested:
            if not set(requested.split()) <= set(grant.scope.split()):
                return _oauth_error("invalid_scope", "scope exceeds the original grant")
            scope = requested
        if google:
            # Google does not rotate: no new refresh token, and the presented one stays valid.
            return issue_tokens(
                client=client,
                scope=scope,
                user=grant.user,
                auth_time=grant.auth_time,
                nonce=None,
                with_refresh_token=False,
            )
        del state.refresh_tokens[presented]
        return issue_tokens(
            client=client, scope=scope, user=grant.user, auth_time=grant.auth_time, nonce=None
        )

    async def userinfo(request: Request) -> Response:
        """Return the claims of the user a Bearer access token was issued to."""
        authorization = request.headers.get("authorization", "")
        presented: str | None = None
        if authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        elif request.method == "POST":
            presented = _form_value(await request.form(), "access_token")
        if not presented:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        grant = state.access_tokens.get(presented)
        if grant is None or grant.expires_at <= time.time():
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse(state.current_profile(grant.subject, grant.claims), headers=_NO_STORE)

    async def revoke(request: Request) -> Response:
        """Revoke an access or refresh token of the authenticated client (RFC 7009)."""
        form = await request.form()
        client = authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        presented = _form_value(form, "token")
        if not presented:
            return _oauth_error("invalid_request", "token is required")
        revoked: str | None = None
        access = state.access_tokens.get(presented)
        if access is not None and access.client_id == client:
            del state.access_tokens[presented]
            revoked = "access_token"
        refresh_grant = state.refresh_tokens.get(presented)
        if refresh_grant is not None and refresh_grant.client_id == client:
            del state.refresh_tokens[presented]
            revoked = "refresh_token"
        state.revocations.append(
            {
                "token": presented,
                "token_type_hint": _form_value(form, "token_type_hint"),
                "client_id": client,
                "revoked": revoked,
            }
        )
        return Response(status_code=200, headers=_NO_STORE)

    async def control_user(request: Request) -> Response:
        """Set the user the next authorizations are issued for."""
        claims = await _json_object(request)
        if claims is None or not isinstance(claims.get("sub"), str) or not claims["sub"]:
            return JSONResponse({"error": "body must be a JSON object with a 'sub'"}, 400)
        state.user = claims
        return JSONResponse({"user": state.user})

    async def control_misbehave(request: Request) -> Response:
        """Arm a one-shot misbehaviour."""
        body = await _json_object(request)
        mode = body.get("mode") if body else None
        if mode not in MISBEHAVE_MODES:
            return JSONResponse(
                {"error": f"mode must be one of {sorted(MISBEHAVE_MODES)}"}, status_code=400
            )
        state.misbehave = mode
        return JSONResponse({"mode": mode})

    async def control_discovery_issuer(request: Request) -> Response:
        """Make discovery advertise another issuer (``null`` restores the real one)."""
        body = await _json_object(request)
        advertised = body.get("issuer") if body else None
        if body is None or not (advertised is None or isinstance(advertised, str)):
            return JSONResponse({"error": "body must be {'issuer': str | null}"}, 400)
        state.discovery_issuer = advertised
        return JSONResponse({"issuer": state.discovery_issuer or issuer})

    async def control_requests(request: Request) -> Response:
        """List every request received by the token endpoint, oldest first."""
        return JSONResponse(state.token_requests)

    async def control_session(request: Request) -> Response:
        """Set the user's upstream session: ``{"age": 86400, "ignore_reauthentication": false}``."""
        body = await request.json()
        state.session_age = int(body["age"])
        state.ignore_reauthentication = bool(body.get("ignore_reauthentication", False))
        return JSONResponse({"age": state.session_age})

    async def control_authorize_requests(request: Request) -> Response:
        """The query parameters of every /authorize request received."""
        return JSONResponse(state.authorize_requests)

    async def control_google(request: Request) -> Response:
        """Google flavour toggles: ``{"bare_iss": true}`` drops the scheme from ID token iss."""
        body = await _json_object(request)
        bare_iss = body.get("bare_iss") if body else None
        if not google:
            return JSONResponse({"error": "the provider was not started with --google"}, 409)
        if not isinstance(bare_iss, bool):
            return JSONResponse({"error": "body must be {'bare_iss': bool}"}, 400)
        state.google_bare_iss = bare_iss
        return JSONResponse({"bare_iss": state.google_bare_iss})

    async def control_grants(request: Request) -> Response:
        """Mint grants as if ``user`` had signed in to ``client_id``; answer their token bodies."""
        body = await _json_object(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, 400)
        grant_client = body.get("client_id")
        user = body.get("user")
        count = body.get("count", 1)
        scope = body.get("scope", DEFAULT_GRANT_SCOPE)
        lifetime = body.get("access_token_lifetime")
        if not isinstance(grant_client, str) or not grant_client:
            return JSONResponse({"error": "'client_id' must be a non-empty string"}, 400)
        if not isinstance(user, dict) or not isinstance(user.get("sub"), str) or not user["sub"]:
            return JSONResponse({"error": "'user' must be a JSON object with a 'sub'"}, 400)
        if type(count) is not int or not 1 <= count <= MAX_CONTROL_GRANTS:
            return JSONResponse(
                {"error": f"'count' must be an integer from 1 to {MAX_CONTROL_GRANTS}"}, 400
            )
        if not isinstance(scope, str) or not scope.split():
            return JSONResponse({"error": "'scope' must be a non-empty string"}, 400)
        if lifetime is not None and (type(lifetime) is not int or lifetime < 0):
            return JSONResponse({"error": "'access_token_lifetime' must be seconds >= 0"}, 400)
        auth_time = int(time.time())
        grants: list[dict[str, Any]] = []
        for minted in range(count):
            if minted and not minted % _GRANTS_PER_YIELD:
                await asyncio.sleep(0)  # signing thousands of ID tokens takes seconds
            grants.append(
                mint_tokens(
                    client=grant_client,
                    scope=scope,
                    user=user,
                    auth_time=auth_time,
                    nonce=None,
                    access_token_lifetime=lifetime,
                )
            )
        return JSONResponse({"grants": grants})

    async def control_refresh_faults(request: Request) -> Response:
        """Append a fault to the refresh script (``{"mode": "none"}`` clears the script)."""
        body = await _json_object(request)
        if body is None or body.get("mode") not in REFRESH_FAULT_MODES | {"none"}:
            return JSONResponse(
                {"error": f"mode must be 'none' or one of {sorted(REFRESH_FAULT_MODES)}"}, 400
            )
        mode, count, seconds = body["mode"], body.get("count", 1), body.get("seconds", 1.0)
        if mode == "none":
            state.refresh_faults.clear()
        elif type(count) is not int or not (count >= 1 or count == -1):
            return JSONResponse({"error": "'count' must be an integer >= 1, or -1"}, 400)
        elif not _non_negative_number(seconds):
            return JSONResponse({"error": "'seconds' must be a number >= 0"}, 400)
        else:
            state.refresh_faults.append(
                _RefreshFault(mode=mode, count=count, seconds=float(seconds))
            )
        return JSONResponse(
            {
                "faults": [
                    {"mode": fault.mode, "count": fault.count, "seconds": fault.seconds}
                    for fault in state.refresh_faults
                ]
            }
        )

    async def control_refresh_log(request: Request) -> Response:
        """Every refresh_token grant request since the last reset, and how often each token came."""
        counts: dict[str, int] = {}
        for attempt in state.refresh_log:
            if attempt.refresh_token is not None:
                counts[attempt.refresh_token] = counts.get(attempt.refresh_token, 0) + 1
        return JSONResponse(
            {
                "refreshes": [
                    {
                        "refresh_token": attempt.refresh_token,
                        "outcome": attempt.outcome,
                        "at": attempt.at,
                        "fault": attempt.fault,
                        "status": attempt.status,
                    }
                    for attempt in state.refresh_log
                ],
                "counts": counts,
            }
        )

    async def control_user_profile(request: Request) -> Response:
        """Change a user's claims upstream (merged into userinfo and new ID tokens)."""
        subject = request.path_params["sub"]
        changes = await _json_object(request)
        if changes is None:
            return JSONResponse({"error": "body must be a JSON object of claims"}, 400)
        if changes.get("sub", subject) != subject:
            return JSONResponse({"error": "the subject of a user cannot change"}, 400)
        changes.pop("sub", None)
        state.profile_changes.setdefault(subject, {}).update(changes)
        return JSONResponse({"sub": subject, "changes": state.profile_changes[subject]})

    async def control_revocations(request: Request) -> Response:
        """Every authenticated revocation request since the last reset, oldest first."""
        return JSONResponse({"revocations": state.revocations})

    async def control_reset(request: Request) -> Response:
        """Restore defaults and forget all grants and recorded requests."""
        state.reset()
        return JSONResponse({"reset": True})

    provider_routes: list[BaseRoute] = [
        Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/jwks", jwks, methods=["GET"]),
        Route("/authorize", authorize, methods=["GET"]),
        Route("/token", token, methods=["POST"]),
        Route("/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/revoke", revoke, methods=["POST"]),
    ]
    control_routes: list[BaseRoute] = [
        Route("/_control/user", control_user, methods=["POST"]),
        Route("/_control/misbehave", control_misbehave, methods=["POST"]),
        Route("/_control/discovery_issuer", control_discovery_issuer, methods=["POST"]),
        Route("/_control/requests", control_requests, methods=["GET"]),
        Route("/_control/reset", control_reset, methods=["POST"]),
        Route("/_control/session", control_session, methods=["POST"]),
        Route("/_control/authorize_requests", control_authorize_requests, methods=["GET"]),
        Route("/_control/google", control_google, methods=["POST"]),
        Route("/_control/grants", control_grants, methods=["POST"]),
        Route("/_control/refresh_faults", control_refresh_faults, methods=["POST"]),
        Route("/_control/refresh_log", control_refresh_log, methods=["GET"]),
        Route("/_control/users/{sub}", control_user_profile, methods=["POST"]),
        Route("/_control/revocations", control_revocations, methods=["GET"]),
    ]
    issuer_path = urlsplit(issuer).path.rstrip("/")
    routes = [Mount(issuer_path, routes=provider_routes)] if issuer_path else provider_routes
    return Starlette(routes=[*control_routes, *routes])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the provider with uvicorn until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--issuer", help="issuer URL (default: http://127.0.0.1:{port})")
    parser.add_argument("--client-id", default="broker")
    parser.add_argument("--client-secret", default="broker-secret")
    parser.add_argument("--alg", default="RS256", help="ID token signing algorithm")
    parser.add_argument("--access-token-lifetime", type=int, default=3600, help="seconds")
    parser.add_argument("--google", action="store_true", help="behave like Google")
    args = parser.parse_args(argv)
    app = create_app(
        args.issuer or f"http://127.0.0.1:{args.port}",
        client_id=args.client_id,
        client_secret=args.client_secret,
        signing_alg=args.alg,
        access_token_lifetime=args.access_token_lifetime,
        google=args.google,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
