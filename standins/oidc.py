"""An OpenID Provider stand-in (the way Keycloak would answer), or Google with ``--google``.

It speaks OpenID Connect over real HTTP:

* discovery (``/.well-known/openid-configuration``) and a public JWKS (``/jwks``);
* ``/authorize`` auto-approves (no UI), only for the code flow with PKCE ``S256``, like an OP
  with an SSO session: only ``prompt=login`` or a ``max_age`` shorter than the session makes the
  user authenticate again (``auth_time``);
* ``/token`` serves the ``authorization_code`` and ``refresh_token`` grants with
  ``client_secret_basic`` or ``client_secret_post``, signs ID tokens and rotates refresh tokens;
* ``/userinfo`` and RFC 7009 revocation (``/revoke``).

With ``google=True`` it behaves like Google where Google differs: ID tokens carry ``hd`` and a
plain-string ``aud``; a code exchange returns a refresh token only for an
``access_type=offline`` request that is the user's first offline grant to the client or says
``prompt=consent`` (at most 100 live refresh tokens per user and client, the oldest silently
revoked); refresh grants never rotate the refresh token; the token response reports Google's
scope URLs.

The control API is the kit's (:mod:`standins.kit.control`): ``/_control/user`` takes the user's
claims (``sub`` required), ``/_control/users/{sub}`` changes them upstream (userinfo and every
new ID token), ``/_control/requests`` lists the token-endpoint requests and
``/_control/authorize_requests`` the query of every accepted ``/authorize``. One-shot
misbehaviours: an ID token with the ``wrong_aud``, ``wrong_iss``, ``bad_nonce``, ``expired``,
``bad_signature`` or ``alg_none``; ``userinfo_sub_mismatch``; ``token_error_500`` (the next code
exchange); ``deny`` (the next authorization). Sticky (until reset): ``jwks_503``, the JWKS
answers 503 while discovery still answers. Its own control routes:

* ``POST /_control/discovery_issuer`` ``{"issuer": str | null}`` — discovery advertises another
  issuer (null: the real one);
* ``POST /_control/session`` ``{"age": seconds, "ignore_reauthentication": false}`` — the
  user's upstream session; a sloppy OP ignores ``prompt=login`` and ``max_age``;
* ``POST /_control/google`` ``{"bare_iss": true}`` — ID tokens carry ``iss`` without its scheme
  (``accounts.google.com``), as Google sometimes does (409 without ``--google``);
* ``POST /_control/grants`` ``{"client_id", "user": {"sub", ...}, "count": 1, "scope":
  "openid email profile offline_access", "access_token_lifetime": seconds}`` — mint ``count``
  (1 to 5000) grants without a browser; answers ``{"grants": [...]}``, each the body a token
  response would have carried. The lifetime applies to these access tokens only;
* ``GET /_control/revocations`` — ``{"revocations": [{"token", "token_type_hint", "client_id",
  "revoked"}, ...]}``: every authenticated revocation request, ``revoked`` saying what the token
  was (``access_token``/``refresh_token``, dropped at once) or null (unknown, another client's).

When the issuer URL has a path (``http://127.0.0.1:9100/realms/test``) the OpenID endpoints are
served under it; the control API stays at ``/_control/``.

Run it from the repository root with ``python -m standins.oidc --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from standins.kit import pkce, signing
from standins.kit.bodies import (
    form_fields,
    form_value,
    json_object,
    presented_client,
    same_secret,
)
from standins.kit.control import ControlAPI, Controls, Misbehaviours, ProfileChanges, logged
from standins.kit.faults import (
    Abandoned,
    OutageMiddleware,
    RefreshAttempt,
    answered,
    scripted,
)
from standins.kit.redirects import is_http_url, redirect
from standins.kit.runner import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, run

AUTHORIZATION_CODE_LIFETIME = 60
"""Seconds an authorization code stays redeemable."""

ID_TOKEN_LIFETIME = 300
"""Seconds between ``iat`` and ``exp`` of every ID token."""

ID_TOKEN_MISBEHAVIOURS = frozenset(
    {"wrong_aud", "wrong_iss", "bad_nonce", "expired", "bad_signature", "alg_none"}
)
MISBEHAVE_MODES = ID_TOKEN_MISBEHAVIOURS | {"userinfo_sub_mismatch", "token_error_500", "deny"}
"""Modes accepted by ``POST /_control/misbehave`` that apply once."""

STICKY_MODES = frozenset({"jwks_503"})
"""Modes accepted by ``POST /_control/misbehave`` that hold until a reset."""

OTHER_CLIENT_ID = "some-other-client"
"""Audience used by the ``wrong_aud`` misbehaviour."""

OTHER_SUBJECT = "someone-else-sub"
"""Subject returned by userinfo under the ``userinfo_sub_mismatch`` misbehaviour."""

MAX_CONTROL_GRANTS = 5000
"""Most grants one ``POST /_control/grants`` mints."""

DEFAULT_GRANT_SCOPE = "openid email profile offline_access"
"""Scope of the grants ``POST /_control/grants`` mints unless told otherwise."""

GOOGLE_REFRESH_TOKEN_LIMIT = 100
"""Live refresh tokens Google keeps per user and client; issuing one more revokes the oldest."""

_GRANTS_PER_YIELD = 50
_GOOGLE_SCOPE_URLS = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
_ID_TOKEN_USER_CLAIMS = ("email", "email_verified", "name", "given_name", "family_name", "picture")
_SUPPORTED_CLAIMS = [
    "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash",
    *_ID_TOKEN_USER_CLAIMS, "preferred_username",
]  # fmt: skip
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def default_user() -> dict[str, Any]:
    """The claims of the user authorizations are issued for until a test picks one."""
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


@dataclass(frozen=True)
class OIDCConfig:
    """One provider: its issuer, the one confidential client it knows, how it signs."""

    issuer: str
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    signing_alg: str = "RS256"
    access_token_lifetime: int = 3600
    google: bool = False

    @property
    def base_url(self) -> str:
        return self.issuer.rstrip("/")


@dataclass
class _AuthorizationCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    user: dict[str, Any]
    auth_time: int
    expires_at: float
    offline: bool = True  # Google flavour: whether redeeming it returns a refresh token


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
    client_id: str
    scope: str
    user: dict[str, Any]
    auth_time: int


@dataclass
class _State:
    """Everything a reset forgets; ``controls`` is the kit's part."""

    controls: Controls = field(
        default_factory=lambda: Controls(
            Misbehaviours(MISBEHAVE_MODES, STICKY_MODES), ProfileChanges("sub")
        )
    )
    user: dict[str, Any] = field(default_factory=default_user)
    discovery_issuer: str | None = None
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    # Seconds since the user last typed a password here (an existing upstream SSO session).
    session_age: int = 0
    ignore_reauthentication: bool = False
    google_bare_iss: bool = False
    # Google flavour: the subjects that already granted the client offline access, and each
    # subject's live refresh tokens, oldest first.
    offline_consented: set[str] = field(default_factory=set)
    refresh_tokens_by_subject: dict[str, list[str]] = field(default_factory=dict)
    revocations: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        """The default user and behaviour back; every grant and record forgotten."""
        self.controls.clear()
        self.user = default_user()
        self.discovery_issuer = None
        self.codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.session_age = 0
        self.ignore_reauthentication = False
        self.google_bare_iss = False
        self.offline_consented.clear()
        self.refresh_tokens_by_subject.clear()
        self.revocations.clear()

    def take(self, *modes: str) -> str | None:
        return self.controls.misbehaviours.take(*modes)


def _oauth_error(
    error: str, description: str, *, status_code: int = 400, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 §5.2 error response."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status_code,
        headers={**_NO_STORE, **(headers or {})},
    )


class _TokenErrors:
    """How this stand-in words a scripted token fault (:class:`standins.kit.faults.FaultDialect`);
    ``drop`` forgets the presented code or refresh token."""

    def __init__(self, what: str, drop: Callable[[], object]) -> None:
        self._what = what
        self._drop = drop

    def unavailable(self) -> Response:
        return _oauth_error("temporarily_unavailable", "simulated upstream outage", status_code=503)

    def rate_limited(self, retry_after: str) -> Response:
        return _oauth_error(
            "temporarily_unavailable",
            "simulated rate limit",
            status_code=429,
            headers={"Retry-After": retry_after},
        )

    def invalid_grant(self) -> Response:
        self._drop()
        return _oauth_error("invalid_grant", f"simulated {self._what} revocation")


class _Tokens:
    """Mints the provider's tokens: opaque access and refresh tokens, signed ID tokens."""

    def __init__(self, config: OIDCConfig, state: _State) -> None:
        self._config = config
        self._state = state
        self.kid = f"upstream-{config.signing_alg.lower()}-{secrets.token_hex(4)}"
        self.key = signing.generate_key(config.signing_alg, self.kid)
        self._user_claims = (
            (*_ID_TOKEN_USER_CLAIMS, "hd") if config.google else _ID_TOKEN_USER_CLAIMS
        )

    def id_token(
        self,
        *,
        user: dict[str, Any],
        nonce: str | None,
        auth_time: int,
        access_token: str,
        misbehave: str | None = None,
    ) -> str:
        """Sign an ID token for ``user``, broken the way ``misbehave`` asks if it does."""
        config, now = self._config, int(time.time())
        audience = OTHER_CLIENT_ID if misbehave == "wrong_aud" else config.client_id
        issuer = config.issuer
        if config.google and self._state.google_bare_iss:
            issuer = issuer.split("://", 1)[-1]
        claims: dict[str, Any] = {
            "iss": f"{config.base_url}/not-the-issuer" if misbehave == "wrong_iss" else issuer,
            "sub": user["sub"],
            "aud": audience if config.google else [audience],  # Google's aud is not a list
            "azp": audience,
            "exp": now + ID_TOKEN_LIFETIME,
            "iat": now,
            "auth_time": auth_time,
            "at_hash": signing.left_half_hash(access_token, config.signing_alg),
        }
        if misbehave == "bad_nonce":
            claims["nonce"] = f"not-{nonce or 'a-nonce'}-{secrets.token_hex(4)}"
        elif nonce is not None:
            claims["nonce"] = nonce
        if misbehave == "expired":
            claims["iat"] = now - 2 * ID_TOKEN_LIFETIME
            claims["exp"] = now - ID_TOKEN_LIFETIME
        claims.update({name: user[name] for name in self._user_claims if name in user})
        if misbehave == "alg_none":
            return signing.unsigned_jwt(claims)
        key = self.key
        if misbehave == "bad_signature":
            key = signing.generate_key(config.signing_alg, self.kid)
        return signing.sign({"alg": config.signing_alg, "kid": self.kid, "typ": "JWT"}, claims, key)

    def mint(
        self,
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

        ``user`` gets the profile changes made upstream for its subject.
        """
        state, google = self._state, self._config.google
        lifetime = access_token_lifetime
        if lifetime is None:
            lifetime = self._config.access_token_lifetime
        user = state.controls.profiles.apply(user["sub"], user)
        access_token = secrets.token_urlsafe(32)
        userinfo = dict(user)
        if misbehave == "userinfo_sub_mismatch":
            userinfo["sub"] = OTHER_SUBJECT
        state.access_tokens[access_token] = _AccessToken(
            client, scope, user["sub"], userinfo, time.time() + lifetime
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        if with_refresh_token:
            refresh_token = secrets.token_urlsafe(32)
            state.refresh_tokens[refresh_token] = _RefreshToken(
                client, scope, dict(user), auth_time
            )
            body["refresh_token"] = refresh_token
            if google:
                live = state.refresh_tokens_by_subject.setdefault(user["sub"], [])
                live.append(refresh_token)
                while len(live) > GOOGLE_REFRESH_TOKEN_LIMIT:
                    state.refresh_tokens.pop(live.pop(0), None)
        body["scope"] = (
            " ".join(_GOOGLE_SCOPE_URLS.get(name, name) for name in scope.split())
            if google
            else scope
        )
        if "openid" in scope.split():
            body["id_token"] = self.id_token(
                user=user,
                nonce=nonce,
                auth_time=auth_time,
                access_token=access_token,
                misbehave=misbehave,
            )
        return body

    def respond(self, **grant: Any) -> JSONResponse:
        """Answer a token request with what :meth:`mint` mints for ``grant``."""
        return JSONResponse(self.mint(**grant), headers=_NO_STORE)


class OpenIDProvider:
    """The provider's endpoints and its own control routes, over one :class:`_State`."""

    def __init__(self, config: OIDCConfig) -> None:
        if not signing.is_supported(config.signing_alg):
            raise ValueError(f"unsupported signing algorithm: {config.signing_alg}")
        self.config = config
        self.state = _State()
        self.tokens = _Tokens(config, self.state)

    # ------------------------------------------------------------------ discovery and keys

    async def discovery(self, request: Request) -> Response:
        base, alg = self.config.base_url, self.config.signing_alg
        client_auth = ["client_secret_basic", "client_secret_post"]
        return JSONResponse(
            {
                "issuer": self.state.discovery_issuer or self.config.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "revocation_endpoint": f"{base}/revoke",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [alg],
                "scopes_supported": ["openid", "email", "profile", "offline_access"],
                "token_endpoint_auth_methods_supported": client_auth,
                "revocation_endpoint_auth_methods_supported": client_auth,
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "claims_supported": _SUPPORTED_CLAIMS,
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def jwks(self, request: Request) -> Response:
        if self.state.controls.misbehaviours.is_on("jwks_503"):
            return JSONResponse({"error": "simulated JWKS outage"}, status_code=503)
        key = signing.public_jwk(self.tokens.key, kid=self.tokens.kid, alg=self.config.signing_alg)
        return JSONResponse({"keys": [key]})

    # ------------------------------------------------------------------ authorization

    async def authorize(self, request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        config, state, query = self.config, self.state, request.query_params
        if query.get("client_id") != config.client_id:
            return _oauth_error("invalid_request", "unknown client_id")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not is_http_url(redirect_uri):
            return _oauth_error("invalid_request", "missing or invalid redirect_uri")
        request_state = query.get("state")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description}
            if request_state is not None:
                params["state"] = request_state
            params["iss"] = config.issuer
            return redirect(redirect_uri, params, headers=_NO_STORE)

        problem = _authorization_problem(request)
        if problem is not None:
            return fail(*problem)
        assert request_state is not None
        if state.take("deny"):
            return fail("access_denied", "The resource owner denied the request")
        now = time.time()
        state.controls.authorize_requests.append(dict(query))
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code = secrets.token_urlsafe(32)
        state.codes[code] = _AuthorizationCode(
            client_id=config.client_id,
            redirect_uri=redirect_uri,
            code_challenge=query["code_challenge"],
            nonce=query.get("nonce"),
            scope=query.get("scope", ""),
            user=dict(state.user),
            auth_time=self._authenticated_at(request, now),
            expires_at=now + AUTHORIZATION_CODE_LIFETIME,
            offline=self._grants_offline(request),
        )
        params = {"code": code, "state": request_state, "iss": config.issuer}
        return redirect(redirect_uri, params, headers=_NO_STORE)

    def _authenticated_at(self, request: Request, now: float) -> int:
        """``auth_time``: now if the request makes the user sign in again, else the session's."""
        state, query = self.state, request.query_params
        max_age = query.get("max_age")
        fresh = not state.ignore_reauthentication and (
            "login" in query.get("prompt", "").split()
            or (max_age is not None and max_age.isdigit() and int(max_age) < state.session_age)
        )
        return int(now) if fresh else int(now) - state.session_age

    def _grants_offline(self, request: Request) -> bool:
        """Google: a refresh token only for access_type=offline, and then only on the user's
        first offline grant to the client or when the consent screen is shown again."""
        if not self.config.google:
            return True
        query, subject = request.query_params, str(self.state.user["sub"])
        offline = query.get("access_type") == "offline"
        first = subject not in self.state.offline_consented
        if offline:
            self.state.offline_consented.add(subject)
        return offline and (first or "consent" in query.get("prompt", "").split())

    # ------------------------------------------------------------------ token endpoint

    def _authenticate_client(self, request: Request, form: FormData) -> str | Response:
        """Authenticate the client (RFC 6749 §2.3.1): its id, or the error response."""
        presented = presented_client(request, form)

        def unauthorized(description: str) -> Response:
            challenge = {"WWW-Authenticate": 'Basic realm="upstream-idp"'}
            return _oauth_error("invalid_client", description, status_code=401, headers=challenge)

        if presented.basic is not None:
            if presented.posted_secret is not None:
                return _oauth_error(
                    "invalid_request", "more than one client authentication method used"
                )
            if presented.basic_malformed:
                return unauthorized("malformed Basic credentials")
            client_id, secret = presented.basic
            if presented.posted_id is not None and presented.posted_id != client_id:
                return _oauth_error("invalid_request", "client_id does not match credentials")
        elif presented.posted_id is not None and presented.posted_secret is not None:
            client_id, secret = presented.posted_id, presented.posted_secret
        else:
            return unauthorized("client authentication required")
        id_ok = same_secret(client_id, self.config.client_id)
        if not (same_secret(secret, self.config.client_secret) and id_ok):
            return unauthorized("client authentication failed")
        return client_id

    async def token(self, request: Request) -> Response:
        """Exchange an authorization code or a refresh token for tokens."""
        form = await request.form()
        self.state.controls.requests.append(logged(request, form=form_fields(form)))
        grant_type = form_value(form, "grant_type")
        if grant_type == "refresh_token":
            attempt = self.state.controls.refresh_log.arrive(form_value(form, "refresh_token"))
            return answered(await self._refresh(request, form, attempt), attempt)
        client = self._authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        if grant_type == "authorization_code":
            return answered(await self._redeem_code(request, client, form))
        if not grant_type:
            return _oauth_error("invalid_request", "grant_type is required")
        return _oauth_error("unsupported_grant_type", f"unsupported grant_type: {grant_type}")

    async def _redeem_code(
        self, request: Request, client: str, form: FormData
    ) -> Response | Abandoned:
        """grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636 §4.6)."""
        state = self.state
        if state.take("token_error_500"):
            return JSONResponse(
                {"error": "server_error", "error_description": "simulated upstream failure"},
                status_code=500,
                headers=_NO_STORE,
            )
        code = form_value(form, "code")
        errors = _TokenErrors("authorization code", lambda: state.codes.pop(code or "", None))
        failed = await scripted(state.controls.code_faults, request, errors)
        if failed is not None:
            return failed
        if not code:
            return _oauth_error("invalid_request", "code is required")
        grant = state.codes.pop(code, None)
        if grant is None or grant.expires_at <= time.time():
            return _oauth_error("invalid_grant", "unknown, used or expired authorization code")
        if grant.client_id != client:
            return _oauth_error("invalid_grant", "code was issued to another client")
        if form_value(form, "redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri does not match")
        verifier = form_value(form, "code_verifier")
        if not pkce.is_verifier(verifier):
            return _oauth_error("invalid_grant", "missing or malformed code_verifier")
        if not pkce.verifier_matches(verifier, grant.code_challenge):
            return _oauth_error("invalid_grant", "PKCE verification failed")
        return self.tokens.respond(
            client=client,
            scope=grant.scope,
            user=grant.user,
            auth_time=grant.auth_time,
            nonce=grant.nonce,
            misbehave=state.take(*ID_TOKEN_MISBEHAVIOURS, "userinfo_sub_mismatch"),
            with_refresh_token=grant.offline,
        )

    async def _refresh(
        self, request: Request, form: FormData, attempt: RefreshAttempt
    ) -> Response | Abandoned:
        """grant_type=refresh_token with rotation (RFC 6749 §6) and the scripted faults."""
        state = self.state
        client = self._authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        presented = form_value(form, "refresh_token")
        errors = _TokenErrors(
            "refresh token", lambda: state.refresh_tokens.pop(presented or "", None)
        )
        failed = await scripted(state.controls.refresh_faults, request, errors, attempt)
        if failed is not None:
            return failed
        if not presented:
            return _oauth_error("invalid_request", "refresh_token is required")
        grant = state.refresh_tokens.get(presented)
        if grant is None or grant.client_id != client:
            return _oauth_error("invalid_grant", "unknown or revoked refresh token")
        scope = grant.scope
        requested = form_value(form, "scope")
        if requested:
            if not set(requested.split()) <= set(grant.scope.split()):
                return _oauth_error("invalid_scope", "scope exceeds the original grant")
            scope = requested
        rotates = not self.config.google  # Google keeps the presented token and issues none
        if rotates:
            del state.refresh_tokens[presented]
        return self.tokens.respond(
            client=client,
            scope=scope,
            user=grant.user,
            auth_time=grant.auth_time,
            nonce=None,
            with_refresh_token=rotates,
        )

    # ------------------------------------------------------------------ userinfo and revocation

    async def userinfo(self, request: Request) -> Response:
        """The claims of the user a Bearer access token was issued to."""
        authorization = request.headers.get("authorization", "")
        presented: str | None = None
        if authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        elif request.method == "POST":
            presented = form_value(await request.form(), "access_token")
        if not presented:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        grant = self.state.access_tokens.get(presented)
        if grant is None or grant.expires_at <= time.time():
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        claims = self.state.controls.profiles.apply(grant.subject, grant.claims)
        return JSONResponse(claims, headers=_NO_STORE)

    async def revoke(self, request: Request) -> Response:
        """Revoke an access or refresh token of the authenticated client (RFC 7009)."""
        state, form = self.state, await request.form()
        client = self._authenticate_client(request, form)
        if isinstance(client, Response):
            return client
        presented = form_value(form, "token")
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
                "token_type_hint": form_value(form, "token_type_hint"),
                "client_id": client,
                "revoked": revoked,
            }
        )
        return Response(status_code=200, headers=_NO_STORE)

    # ------------------------------------------------------------------ control

    def set_user(self, claims: dict[str, Any] | None) -> dict[str, Any] | str:
        if claims is None or not isinstance(claims.get("sub"), str) or not claims["sub"]:
            return "body must be a JSON object with a 'sub'"
        self.state.user = claims
        return claims

    async def control_discovery_issuer(self, request: Request) -> Response:
        body = await json_object(request)
        advertised = body.get("issuer") if body else None
        if body is None or not (advertised is None or isinstance(advertised, str)):
            return JSONResponse({"error": "body must be {'issuer': str | null}"}, 400)
        self.state.discovery_issuer = advertised
        return JSONResponse({"issuer": advertised or self.config.issuer})

    async def control_session(self, request: Request) -> Response:
        body = await request.json()
        self.state.session_age = int(body["age"])
        self.state.ignore_reauthentication = bool(body.get("ignore_reauthentication", False))
        return JSONResponse({"age": self.state.session_age})

    async def control_google(self, request: Request) -> Response:
        body = await json_object(request)
        bare_iss = body.get("bare_iss") if body else None
        if not self.config.google:
            return JSONResponse({"error": "the provider was not started with --google"}, 409)
        if not isinstance(bare_iss, bool):
            return JSONResponse({"error": "body must be {'bare_iss': bool}"}, 400)
        self.state.google_bare_iss = bare_iss
        return JSONResponse({"bare_iss": bare_iss})

    async def control_grants(self, request: Request) -> Response:
        """Mint grants as if ``user`` had signed in to ``client_id``; answer their token bodies."""
        body = await json_object(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, 400)
        problem = _grants_problem(body)
        if problem is not None:
            return JSONResponse({"error": problem}, 400)
        auth_time = int(time.time())
        grants: list[dict[str, Any]] = []
        for minted in range(body.get("count", 1)):
            if minted and not minted % _GRANTS_PER_YIELD:
                await asyncio.sleep(0)  # signing thousands of ID tokens takes seconds
            grants.append(
                self.tokens.mint(
                    client=body["client_id"],
                    scope=body.get("scope", DEFAULT_GRANT_SCOPE),
                    user=body["user"],
                    auth_time=auth_time,
                    nonce=None,
                    access_token_lifetime=body.get("access_token_lifetime"),
                )
            )
        return JSONResponse({"grants": grants})

    async def control_revocations(self, request: Request) -> Response:
        return JSONResponse({"revocations": self.state.revocations})

    # ------------------------------------------------------------------ the app

    def app(self) -> Starlette:
        provider_routes: list[BaseRoute] = [
            Route("/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route("/jwks", self.jwks, methods=["GET"]),
            Route("/authorize", self.authorize, methods=["GET"]),
            Route("/token", self.token, methods=["POST"]),
            Route("/userinfo", self.userinfo, methods=["GET", "POST"]),
            Route("/revoke", self.revoke, methods=["POST"]),
        ]
        control = ControlAPI(self.state.controls, reset=self.state.reset, set_user=self.set_user)
        control_routes = control.routes(
            Route("/_control/discovery_issuer", self.control_discovery_issuer, methods=["POST"]),
            Route("/_control/session", self.control_session, methods=["POST"]),
            Route("/_control/google", self.control_google, methods=["POST"]),
            Route("/_control/grants", self.control_grants, methods=["POST"]),
            Route("/_control/revocations", self.control_revocations, methods=["GET"]),
        )
        issuer_path = urlsplit(self.config.issuer).path.rstrip("/")
        routes = [Mount(issuer_path, routes=provider_routes)] if issuer_path else provider_routes
        token_path = f"{issuer_path}/token"
        outage = Middleware(
            OutageMiddleware,
            outage=self.state.controls.outage,
            scripted=lambda path: path == token_path,
        )
        return Starlette(routes=[*control_routes, *routes], middleware=[outage])


def _authorization_problem(request: Request) -> tuple[str, str] | None:
    """What is wrong with an authorization request whose client and redirect URI are known."""
    query = request.query_params
    repeated = [name for name in query if len(query.getlist(name)) > 1]
    if repeated:
        return "invalid_request", f"parameter repeated: {repeated[0]}"
    if query.get("response_type") != "code":
        return "unsupported_response_type", "only response_type=code is supported"
    if not query.get("state"):
        return "invalid_request", "state is required"
    if "openid" not in query.get("scope", "").split():
        return "invalid_scope", "the openid scope is required"
    challenge = query.get("code_challenge")
    if not challenge or query.get("code_challenge_method") != "S256":
        return "invalid_request", "PKCE with code_challenge_method=S256 is required"
    if not pkce.is_s256_challenge(challenge):
        return "invalid_request", "malformed code_challenge"
    return None


def _grants_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a ``POST /_control/grants`` body, or None."""
    user, count = body.get("user"), body.get("count", 1)
    scope, lifetime = body.get("scope", DEFAULT_GRANT_SCOPE), body.get("access_token_lifetime")
    if not isinstance(body.get("client_id"), str) or not body["client_id"]:
        return "'client_id' must be a non-empty string"
    if not isinstance(user, dict) or not isinstance(user.get("sub"), str) or not user["sub"]:
        return "'user' must be a JSON object with a 'sub'"
    if type(count) is not int or not 1 <= count <= MAX_CONTROL_GRANTS:
        return f"'count' must be an integer from 1 to {MAX_CONTROL_GRANTS}"
    if not isinstance(scope, str) or not scope.split():
        return "'scope' must be a non-empty string"
    if lifetime is not None and (type(lifetime) is not int or lifetime < 0):
        return "'access_token_lifetime' must be seconds >= 0"
    return None


def create_app(
    issuer: str,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    signing_alg: str = "RS256",
    access_token_lifetime: int = 3600,
    google: bool = False,
) -> Starlette:
    """The provider as a Starlette app; ``issuer`` is the exact ``iss`` and the endpoints' base.

    It signs ID tokens with a fresh key for ``signing_alg`` (RS256/384/512, PS256/384/512,
    ES256/384/512); ``google`` turns on Google's ways.
    """
    config = OIDCConfig(
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        signing_alg=signing_alg,
        access_token_lifetime=access_token_lifetime,
        google=google,
    )
    return OpenIDProvider(config).app()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--issuer", help="issuer URL (default: http://127.0.0.1:{port})")
    parser.add_argument("--alg", default="RS256", help="ID token signing algorithm")
    parser.add_argument("--access-token-lifetime", type=int, default=3600, help="seconds")
    parser.add_argument("--google", action="store_true", help="behave like Google")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the provider until interrupted."""
    run(
        argv,
        description=__doc__,
        default_port=9100,
        add_arguments=_arguments,
        build=lambda args, default_url: create_app(
            args.issuer or default_url,
            client_id=args.client_id,
            client_secret=args.client_secret,
            signing_alg=args.alg,
            access_token_lifetime=args.access_token_lifetime,
            google=args.google,
        ),
    )


if __name__ == "__main__":
    main()
