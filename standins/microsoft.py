"""A stand-in for the Microsoft identity platform (Entra ID, v2.0 endpoints) and a bit of Graph.

The authority is ``http://127.0.0.1:PORT`` (where Entra has ``https://login.microsoftonline.com``)
and Graph is ``http://127.0.0.1:PORT/graph`` (for ``https://graph.microsoft.com``). It speaks
OpenID Connect with Entra's quirks:

* every URL names a tenant: ``common``, ``organizations``, ``consumers`` or a tenant GUID.
  ``/{tenant}/v2.0/.well-known/openid-configuration`` advertises, for ``common`` and
  ``organizations``, the issuer *template* ``{authority}/{tenantid}/v2.0`` (with the braces),
  for ``consumers`` the personal-accounts tenant, for a GUID that tenant; an unknown tenant
  gets ``AADSTS90002``. Discovery has no ``authorization_response_iss_parameter_supported``
  and no revocation endpoint (Entra has none); the authorization response carries no ``iss``;
* the authorization endpoint auto-approves (no UI), requires PKCE ``S256`` and
  ``response_mode=query``, and redirects back with ``code``, ``state`` and ``session_state``;
* the token endpoint serves the ``authorization_code`` and ``refresh_token`` grants with
  ``client_secret_post`` or ``client_secret_basic``. A refresh token comes only with the
  ``offline_access`` scope; each refresh returns a new one, and (as on Entra) the old one stays
  valid. Errors are Entra's JSON (``AADSTS…`` descriptions, ``error_codes``, ``trace_id``…);
* ID tokens are RS256 with a ``kid`` from the JWKS served at every tenant's ``jwks_uri``. Their
  ``iss`` is ``{authority}/{tid}/v2.0`` for the user's own ``tid``, ``sub`` is pairwise (per
  client), and ``email`` and ``xms_edov`` appear only when the user has them;
* Graph: ``/graph/v1.0/me``, ``/graph/v1.0/me/photo/$value`` (the photo bytes, or 404
  ``ImageNotFound``) and the OIDC UserInfo endpoint ``/graph/oidc/userinfo``.

The control API is the kit's (:mod:`standins.kit.control`): ``/_control/user`` takes ``tid`` and
``oid`` (lower-case GUIDs) and optionally ``sub``, ``name``, ``given_name``, ``family_name``,
``preferred_username``, ``email``, ``xms_edov``, ``photo`` (``png``/``jpeg``) and
``extra_claims``; ``/_control/users/{oid}`` changes a user upstream (new ID tokens and Graph);
``/_control/requests`` lists discovery, keys, token, logout and Graph requests,
``/_control/authorize_requests`` ``{"tenant", "params"}`` for every accepted authorization.
One-shot misbehaviours: an ID token whose ``iss`` names another tenant (``iss_other_tenant``),
the ``{tenantid}`` template (``iss_template``) or the v1 issuer (``iss_v1``); a 500 from the
token endpoint (``token_error_500``); ``deny``.

Run it from the repository root with ``python -m standins.microsoft --port 9300``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from standins.kit import pkce, signing
from standins.kit.bodies import (
    authorization_scheme,
    form_fields,
    form_value,
    presented_client,
    same_secret,
)
from standins.kit.control import ControlAPI, Controls, Misbehaviours, ProfileChanges, logged
from standins.kit.faults import Abandoned, OutageMiddleware, RefreshAttempt, answered, scripted
from standins.kit.images import TINY_JPEG, TINY_PNG
from standins.kit.redirects import is_http_url, redirect
from standins.kit.runner import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, run

TENANT_TEMPLATE = "{tenantid}"
"""What Entra's multi-tenant discovery documents put where the tenant id goes."""

CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
"""The tenant of personal Microsoft accounts (the ``consumers`` endpoint's issuer)."""

DEFAULT_TENANT = "11111111-1111-1111-1111-111111111111"
"""The default user's ``tid``."""

OTHER_TENANT = "99999999-9999-9999-9999-999999999999"
"""The tenant the ``iss_other_tenant`` misbehaviour names."""

MULTI_TENANT = frozenset({"common", "organizations"})

AUTHORIZATION_CODE_LIFETIME = 600
"""Seconds an authorization code stays redeemable (Entra: about 10 minutes)."""

ACCESS_TOKEN_LIFETIME = 3599
"""``expires_in`` and ``ext_expires_in`` of every access token."""

ID_TOKEN_LIFETIME = 3600
"""Seconds between ``iat`` and ``exp`` of every ID token (Entra: one hour)."""

MISBEHAVE_MODES = frozenset(
    {"iss_other_tenant", "iss_template", "iss_v1", "token_error_500", "deny"}
)
"""Modes accepted by ``POST /_control/misbehave``; each one applies once."""

_ISS_MODES = ("iss_other_tenant", "iss_template", "iss_v1")
_OIDC_SCOPES = ("openid", "profile", "email")
_GRAPH_RESOURCE = "https://graph.microsoft.com/"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
_PHOTOS = {"png": (TINY_PNG, "image/png"), "jpeg": (TINY_JPEG, "image/jpeg")}
_MALFORMED = "Invalid request. Request is malformed or invalid."
_CLIENT_AUTH_METHODS = ["client_secret_post", "private_key_jwt", "client_secret_basic"]
_CLAIMS_SUPPORTED = [
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
    "name", "tid", "ver", "at_hash", "c_hash", "email",
]  # fmt: skip


def default_user() -> dict[str, Any]:
    """The work account authorizations are issued for until a test picks one."""
    return {
        "tid": DEFAULT_TENANT,
        "oid": "22222222-2222-2222-2222-222222222222",
        "name": "Adele Vance",
        "given_name": "Adele",
        "family_name": "Vance",
        "preferred_username": "adele@contoso.example",
        "email": "adele@contoso.example",
        "xms_edov": True,
        "photo": "jpeg",
    }


def _user_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a ``/_control/user`` body, or None."""
    for name in ("tid", "oid"):
        if not isinstance(body.get(name), str) or not _GUID.fullmatch(body[name]):
            return f"'{name}' must be a lower-case GUID"
    for name in ("sub", "name", "given_name", "family_name", "preferred_username", "email"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"'{name}' must be a string or null"
    if body.get("xms_edov") is not None and not isinstance(body["xms_edov"], bool):
        return "'xms_edov' must be a boolean or null"
    if body.get("photo") is not None and body["photo"] not in _PHOTOS:
        return "'photo' must be 'png', 'jpeg' or null"
    if body.get("extra_claims") is not None and not isinstance(body["extra_claims"], dict):
        return "'extra_claims' must be an object"
    return None


@dataclass
class _AuthorizationCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    user: dict[str, Any]
    session_id: str
    expires_at: float


@dataclass
class _AccessToken:
    """An opaque access token for Graph and the user it stands for."""

    client_id: str
    scope: str
    user: dict[str, Any]
    expires_at: float


@dataclass
class _RefreshToken:
    client_id: str
    scope: str
    user: dict[str, Any]
    session_id: str


@dataclass
class _State:
    """Everything a reset forgets; ``controls`` is the kit's part."""

    controls: Controls = field(
        default_factory=lambda: Controls(Misbehaviours(MISBEHAVE_MODES), ProfileChanges("oid"))
    )
    user: dict[str, Any] = field(default_factory=default_user)
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    redeemed_codes: set[str] = field(default_factory=set)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)

    def reset(self) -> None:
        self.controls.clear()
        self.user = default_user()
        self.codes.clear()
        self.redeemed_codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    def now(self, user: dict[str, Any]) -> dict[str, Any]:
        """``user`` with the changes made upstream since it was captured."""
        return self.controls.profiles.apply(user["oid"], user)


def _timestamp() -> str:
    """Entra's error timestamp format, ``2024-05-01 12:34:56Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _signing_key() -> tuple[RSAKey, dict[str, Any]]:
    """A fresh RSA key with a self-signed certificate, and its public JWK as Entra shows it."""
    private, der = signing.certified_rsa_key("accounts.accesscontrol.test")
    thumbprint = signing.b64url(
        hashlib.sha1(der, usedforsecurity=False).digest()
    )  # x5t: SHA-1 thumbprint (RFC 7517)
    key = RSAKey.import_key(private, parameters={"kid": thumbprint, "use": "sig"})
    public: dict[str, Any] = {
        "kty": "RSA",
        "use": "sig",
        "kid": thumbprint,
        "x5t": thumbprint,
        **{part: key.as_dict(private=False)[part] for part in ("n", "e")},
        "x5c": [base64.b64encode(der).decode("ascii")],
        "cloud_instance_name": "microsoftonline.com",
    }
    return key, public


def _granted_scope(requested: str) -> str:
    """The ``scope`` Entra reports: Graph scopes fully qualified, never ``offline_access``."""
    scopes = requested.split()
    resources = [
        scope if "://" in scope else f"{_GRAPH_RESOURCE}{scope}"
        for scope in scopes
        if scope not in (*_OIDC_SCOPES, "offline_access")
    ]
    oidc = [scope for scope in scopes if scope in _OIDC_SCOPES]
    return " ".join([*oidc, *(resources or [f"{_GRAPH_RESOURCE}User.Read"])])


def _error_page(code: int, message: str) -> HTMLResponse:
    """The page Entra shows instead of redirecting to an untrusted redirect_uri."""
    return HTMLResponse(
        f"<h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS{code}: {message}</p>",
        status_code=400,
    )


def _graph_error(status_code: int, code: str, message: str, authority: str) -> JSONResponse:
    inner = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    headers = {}
    if status_code == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer realm="", authorization_uri="{authority}/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        )
    return JSONResponse(
        {"error": {"code": code, "message": message, "innerError": inner}},
        status_code=status_code,
        headers=headers,
    )


class _AadErrors:
    """Entra's token-endpoint errors (``AADSTS…``), and its words for scripted token faults
    (:class:`standins.kit.faults.FaultDialect`)."""

    def __init__(self, authority: str, drop: Callable[[], object] = lambda: None) -> None:
        self._authority = authority
        self._drop = drop

    def __call__(
        self, error: str, code: int, message: str, status_code: int = 400, **headers: str
    ) -> JSONResponse:
        trace_id, correlation_id, timestamp = str(uuid.uuid4()), str(uuid.uuid4()), _timestamp()
        description = (
            f"AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}"
        )
        return JSONResponse(
            {
                "error": error,
                "error_description": description,
                "error_codes": [code],
                "timestamp": timestamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"{self._authority}/error?code={code}",
            },
            status_code=status_code,
            headers={**_NO_STORE, **headers},
        )

    def missing(self, parameter: str) -> JSONResponse:
        message = f"The request body must contain the following parameter: '{parameter}'."
        return self("invalid_request", 900144, message)

    def unknown_tenant(self, tenant: str) -> JSONResponse:
        return self(
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def unavailable(self) -> Response:
        message = "A transient error has occurred. Please try again."
        return self("temporarily_unavailable", 90033, message, status_code=503)

    def rate_limited(self, retry_after: str) -> Response:
        message = "The request has been throttled. Please try again later."
        return self("temporarily_unavailable", 90055, message, 429, **{"Retry-After": retry_after})

    def invalid_grant(self) -> Response:
        self._drop()
        message = "The provided grant has expired due to it being revoked."
        return self("invalid_grant", 50173, message)


class Entra:
    """The login endpoints, Graph and the stand-in's state."""

    def __init__(self, authority: str, *, client_id: str, client_secret: str) -> None:
        self.authority = authority.rstrip("/")
        self.graph = f"{self.authority}/graph"
        self.client_id, self.client_secret = client_id, client_secret
        self.signing_key, self.public_jwk = _signing_key()
        self.state = _State()
        self.errors = _AadErrors(self.authority)

    def issuer_of(self, tenant: str) -> str | None:
        """The issuer a tenant path advertises, or None for an unknown tenant."""
        tenant = tenant.lower()
        if tenant in MULTI_TENANT:
            return f"{self.authority}/{TENANT_TEMPLATE}/v2.0"
        if tenant == "consumers":
            return f"{self.authority}/{CONSUMERS_TENANT}/v2.0"
        if _GUID.fullmatch(tenant):
            return f"{self.authority}/{tenant}/v2.0"
        return None

    def _record(self, request: Request, kind: str, **details: Any) -> None:
        self.state.controls.requests.append(
            logged(request, kind=kind, **details, authorization=authorization_scheme(request))
        )

    # ------------------------------------------------------------------ discovery and keys

    async def discovery(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        self._record(request, "discovery", tenant=tenant)
        issuer = self.issuer_of(tenant)
        if issuer is None:
            return self.errors.unknown_tenant(tenant)
        base = f"{self.authority}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": _CLIENT_AUTH_METHODS,
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": issuer,
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{self.graph}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": _CLAIMS_SUPPORTED,
                "kerberos_endpoint": f"{base}/kerberos",
                "tenant_region_scope": "EU" if _GUID.fullmatch(tenant.lower()) else None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": urlsplit(self.graph).netloc,
                "rbac_url": "https://pas.windows.net",
            }
        )

    async def keys(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        self._record(request, "keys", tenant=tenant)
        issuer = self.issuer_of(tenant)
        if issuer is None:
            return self.errors.unknown_tenant(tenant)
        return JSONResponse({"keys": [{**self.public_jwk, "issuer": issuer}]})

    # ------------------------------------------------------------------ authorize

    async def authorize(self, request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        state, tenant, query = self.state, request.path_params["tenant"], request.query_params
        if self.issuer_of(tenant) is None:
            return _error_page(90002, f"Tenant '{tenant}' not found.")
        requested_client = query.get("client_id", "")
        if requested_client != self.client_id:
            return _error_page(
                700016,
                f"Application with identifier '{requested_client}' was not found in the "
                f"directory '{tenant}'.",
            )
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not is_http_url(redirect_uri):
            return _error_page(
                50011,
                f"The redirect URI '{redirect_uri or ''}' specified in the request does not "
                "match the redirect URIs configured for the application.",
            )
        state.controls.authorize_requests.append({"tenant": tenant, "params": dict(query)})
        echoed = {"state": query["state"]} if "state" in query else {}
        problem = _authorization_problem(request)
        if problem is None and state.controls.misbehaviours.take("deny"):
            problem = ("access_denied", "AADSTS65004: User declined to consent to access the app.")
        if problem is not None:
            params = {"error": problem[0], "error_description": problem[1], **echoed}
            return redirect(redirect_uri, params, headers=_NO_STORE)
        now = time.time()
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code, session_id = "1.A" + secrets.token_urlsafe(48), str(uuid.uuid4())
        state.codes[code] = _AuthorizationCode(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            code_challenge=query["code_challenge"],
            nonce=query.get("nonce"),
            scope=query["scope"],
            user=dict(state.user),
            session_id=session_id,
            expires_at=now + AUTHORIZATION_CODE_LIFETIME,
        )
        params = {"code": code, **echoed, "session_state": session_id}
        return redirect(redirect_uri, params, headers=_NO_STORE)

    # ------------------------------------------------------------------ token

    def _authenticate_client(self, request: Request, form: FormData) -> Response | None:
        """client_secret_basic or client_secret_post; Entra's error response on failure."""
        presented, aad = presented_client(request, form), self.errors
        client_id, secret = presented.posted_id, presented.posted_secret
        if presented.basic is not None:
            if client_id is not None and client_id != presented.basic[0]:
                return aad(
                    "invalid_request",
                    900023,
                    "Specified client_id does not match the client_id in the Authorization header.",
                )
            client_id, secret = presented.basic
        if client_id is None:
            return aad.missing("client_id")
        if not same_secret(client_id, self.client_id):
            return aad(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if not secret:
            return aad(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
                status_code=401,
            )
        if not same_secret(secret, self.client_secret):
            return aad(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{self.client_id}'.",
                status_code=401,
            )
        return None

    def _id_token(self, user: dict[str, Any], nonce: str | None, session_id: str) -> str:
        """Sign an ID token for ``user``, its ``iss`` broken if a misbehaviour is armed."""
        now, tid = int(time.time()), user["tid"]
        issuer = f"{self.authority}/{tid}/v2.0"
        mode = self.state.controls.misbehaviours.take(*_ISS_MODES)
        if mode == "iss_other_tenant":
            other = OTHER_TENANT if tid != OTHER_TENANT else DEFAULT_TENANT
            issuer = f"{self.authority}/{other}/v2.0"
        elif mode == "iss_template":
            issuer = f"{self.authority}/{TENANT_TEMPLATE}/v2.0"
        elif mode == "iss_v1":
            issuer = f"https://sts.windows.net/{tid}/"
        claims: dict[str, Any] = {
            "aud": self.client_id,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "aio": secrets.token_urlsafe(48),
        }
        claims.update(
            {name: user[name] for name in ("email", "name") if user.get(name) is not None}
        )
        if nonce is not None:
            claims["nonce"] = nonce
        claims["oid"] = user["oid"]
        if user.get("preferred_username") is not None:
            claims["preferred_username"] = user["preferred_username"]
        claims.update(
            {
                "rh": "1.A" + secrets.token_urlsafe(32) + ".",
                "sid": session_id,
                "sub": self.subject_of(user),
                "tid": tid,
                "uti": secrets.token_urlsafe(16),
                "ver": "2.0",
            }
        )
        if user.get("xms_edov") is not None:
            claims["xms_edov"] = user["xms_edov"]
        claims.update(user.get("extra_claims") or {})
        header = {"typ": "JWT", "alg": "RS256", "kid": self.public_jwk["kid"]}
        return signing.sign(header, claims, self.signing_key)

    def subject_of(self, user: dict[str, Any]) -> str:
        """The pairwise ``sub``: the user's own if set, else derived from tid, oid and client."""
        if user.get("sub"):
            return str(user["sub"])
        pairwise = f"{user['tid']}:{user['oid']}:{self.client_id}".encode()
        return signing.b64url(hashlib.sha256(pairwise).digest())

    def _issue(self, scope: str, user: dict[str, Any], nonce: str | None, session: str) -> Response:
        state, user = self.state, self.state.now(user)
        access_token = "EwB" + secrets.token_urlsafe(96)
        state.access_tokens[access_token] = _AccessToken(
            self.client_id, scope, dict(user), time.time() + ACCESS_TOKEN_LIFETIME
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": _granted_scope(scope),
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "ext_expires_in": ACCESS_TOKEN_LIFETIME,
            "access_token": access_token,
        }
        if "offline_access" in scope.split():
            refresh_token = "1.A" + secrets.token_urlsafe(160)
            state.refresh_tokens[refresh_token] = _RefreshToken(
                self.client_id, scope, dict(user), session
            )
            body["refresh_token"] = refresh_token
        if "openid" in scope.split():
            body["id_token"] = self._id_token(user, nonce, session)
        return JSONResponse(body, headers=_NO_STORE)

    async def token(self, request: Request) -> Response:
        """Exchange an authorization code or a refresh token for tokens."""
        tenant, form = request.path_params["tenant"], await request.form()
        self._record(request, "token", tenant=tenant, form=form_fields(form))
        grant_type = form_value(form, "grant_type")
        attempt = None
        if grant_type == "refresh_token":
            attempt = self.state.controls.refresh_log.arrive(form_value(form, "refresh_token"))
        return answered(await self._token_answer(request, tenant, form, attempt), attempt)

    async def _token_answer(
        self, request: Request, tenant: str, form: FormData, attempt: RefreshAttempt | None
    ) -> Response | Abandoned:
        if self.issuer_of(tenant) is None:
            return self.errors.unknown_tenant(tenant)
        if self.state.controls.misbehaviours.take("token_error_500"):
            message = "A transient error has occurred. Please try again."
            return self.errors("temporarily_unavailable", 90033, message, status_code=500)
        problem = self._authenticate_client(request, form)
        if problem is not None:
            return problem
        grant_type = form_value(form, "grant_type")
        if grant_type == "authorization_code":
            return await self._redeem_code(request, form)
        if attempt is not None:
            return await self._refresh(request, form, attempt)
        if grant_type is None:
            return self.errors.missing("grant_type")
        message = f"The app requested an unsupported grant type '{grant_type}'."
        return self.errors("unsupported_grant_type", 70003, message)

    async def _redeem_code(self, request: Request, form: FormData) -> Response | Abandoned:
        state, aad, code = self.state, self.errors, form_value(form, "code")
        errors = _AadErrors(self.authority, lambda: state.codes.pop(code or "", None))
        failed = await scripted(state.controls.code_faults, request, errors)
        if failed is not None:
            return failed
        if code is None:
            return aad.missing("code")
        if code in state.redeemed_codes:
            return aad(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
            )
        grant = state.codes.pop(code, None)
        if grant is None:
            return aad("invalid_grant", 9002313, _MALFORMED)
        state.redeemed_codes.add(code)
        if grant.expires_at <= time.time():
            return aad(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
            )
        if form_value(form, "redirect_uri") != grant.redirect_uri:
            return aad(
                "invalid_grant",
                50011,
                "The redirect URI specified in the request does not match the redirect URI "
                "of the authorization request.",
            )
        verifier = form_value(form, "code_verifier")
        if not pkce.is_verifier(verifier) or not pkce.verifier_matches(
            verifier, grant.code_challenge
        ):
            return aad(
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the "
                "authorization request for PKCE.",
            )
        return self._issue(grant.scope, grant.user, grant.nonce, grant.session_id)

    async def _refresh(
        self, request: Request, form: FormData, attempt: RefreshAttempt
    ) -> Response | Abandoned:
        state, aad, presented = self.state, self.errors, form_value(form, "refresh_token")
        drop = _AadErrors(self.authority, lambda: state.refresh_tokens.pop(presented or "", None))
        failed = await scripted(state.controls.refresh_faults, request, drop, attempt)
        if failed is not None:
            return failed
        if presented is None:
            return aad.missing("refresh_token")
        grant = state.refresh_tokens.get(presented)
        if grant is None:
            return aad("invalid_grant", 9002313, _MALFORMED)
        scope = grant.scope
        requested = form_value(form, "scope")
        if requested:
            extra = set(requested.split()) - set(grant.scope.split()) - {"offline_access"}
            if extra:
                return aad(
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the application for "
                    f"'{' '.join(sorted(extra))}'.",
                )
            scope = requested
        # Entra hands out a new refresh token on every use; the presented one stays valid.
        return self._issue(scope, grant.user, None, grant.session_id)

    # ------------------------------------------------------------------ logout

    async def logout(self, request: Request) -> Response:
        query = request.query_params
        self._record(request, "logout", tenant=request.path_params["tenant"], query=dict(query))
        target = query.get("post_logout_redirect_uri")
        if target and is_http_url(target):
            echoed = {"state": query["state"]} if "state" in query else {}
            return redirect(target, echoed, headers=_NO_STORE)
        return HTMLResponse("<h1>You signed out of your account</h1>")

    # ------------------------------------------------------------------ Graph

    def _graph_caller(self, request: Request) -> dict[str, Any] | Response:
        """The user a Graph request's access token stands for (as it is now), or Graph's 401."""
        self._record(request, "graph")
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() != "bearer " or not authorization[7:].strip():
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty.", self.authority
            )
        grant = self.state.access_tokens.get(authorization[7:].strip())
        if grant is None:
            message = "Access token validation failure."
            return _graph_error(401, "InvalidAuthenticationToken", message, self.authority)
        if grant.expires_at <= time.time():
            message = "Lifetime validation failed, the token is expired."
            return _graph_error(401, "InvalidAuthenticationToken", message, self.authority)
        return self.state.now(grant.user)

    async def me(self, request: Request) -> Response:
        user = self._graph_caller(request)
        if isinstance(user, Response):
            return user
        return JSONResponse(
            {
                "@odata.context": f"{self.graph}/v1.0/$metadata#users/$entity",
                "businessPhones": [],
                "displayName": user.get("name"),
                "givenName": user.get("given_name"),
                "jobTitle": None,
                "mail": user.get("email"),
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": None,
                "surname": user.get("family_name"),
                "userPrincipalName": user.get("preferred_username"),
                "id": user["oid"],
            }
        )

    async def photo(self, request: Request) -> Response:
        """``/me/photo/$value``: the photo's bytes, or 404 ``ImageNotFound``."""
        user = self._graph_caller(request)
        if isinstance(user, Response):
            return user
        if user.get("photo") in _PHOTOS:
            content, media_type = _PHOTOS[user["photo"]]
            return Response(content, media_type=media_type)
        return _graph_error(
            404,
            "ImageNotFound",
            "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' "
            "was thrown.",
            self.authority,
        )

    async def userinfo(self, request: Request) -> Response:
        """Graph's OpenID Connect UserInfo endpoint."""
        user = self._graph_caller(request)
        if isinstance(user, Response):
            return user
        body: dict[str, Any] = {"sub": self.subject_of(user)}
        for name in ("name", "family_name", "given_name"):
            if user.get(name) is not None:
                body[name] = user[name]
        body["picture"] = f"{self.graph}/v1.0/me/photo/$value"
        if user.get("email") is not None:
            body["email"] = user["email"]
        return JSONResponse(body)

    # ------------------------------------------------------------------ control and the app

    def set_user(self, body: dict[str, Any] | None) -> dict[str, Any] | str:
        """The user the next authorizations are issued for (fields not given are absent)."""
        problem = "body must be a JSON object" if body is None else _user_problem(body)
        if body is None or problem is not None:
            return problem or "body must be a JSON object"
        self.state.user = {name: value for name, value in body.items() if value is not None}
        return self.state.user

    def app(self) -> Starlette:
        control = ControlAPI(self.state.controls, reset=self.state.reset, set_user=self.set_user)
        tenant = "/{tenant}"
        outage = Middleware(
            OutageMiddleware,
            outage=self.state.controls.outage,
            scripted=lambda path: path.endswith("/oauth2/v2.0/token"),
        )
        return Starlette(
            middleware=[outage],
            routes=[
                *control.routes(),
                Route("/graph/oidc/userinfo", self.userinfo, methods=["GET", "POST"]),
                Route("/graph/v1.0/me", self.me, methods=["GET"]),
                Route("/graph/v1.0/me/photo/$value", self.photo, methods=["GET"]),
                Route(
                    f"{tenant}/v2.0/.well-known/openid-configuration",
                    self.discovery,
                    methods=["GET"],
                ),
                Route(f"{tenant}/discovery/v2.0/keys", self.keys, methods=["GET"]),
                Route(f"{tenant}/oauth2/v2.0/authorize", self.authorize, methods=["GET"]),
                Route(f"{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route(f"{tenant}/oauth2/v2.0/logout", self.logout, methods=["GET", "POST"]),
            ],
        )


def _authorization_problem(request: Request) -> tuple[str, str] | None:
    """What is wrong with an authorization request whose client and redirect URI are known."""
    query = request.query_params
    response_mode = query.get("response_mode", "query")
    if response_mode != "query":
        return (
            "invalid_request",
            f"this stand-in only answers response_mode=query, not {response_mode}",
        )
    response_type = query.get("response_type", "")
    if response_type != "code":
        return (
            "unsupported_response_type",
            f"AADSTS700054: response_type '{response_type}' is not enabled for the application.",
        )
    if not query.get("scope", ""):
        return "invalid_request", "AADSTS90014: The required field 'scope' is missing."
    code_challenge = query.get("code_challenge")
    if not code_challenge:
        return "invalid_request", "AADSTS90014: The required field 'code_challenge' is missing."
    if query.get("code_challenge_method") != "S256":
        return "invalid_request", "this stand-in requires code_challenge_method=S256"
    if not pkce.is_s256_challenge(code_challenge):
        return "invalid_request", "AADSTS501491: Invalid size of Code_Challenge parameter."
    return None


def create_app(
    authority: str,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
) -> Starlette:
    """The stand-in as a Starlette app; ``authority`` is the base URL of every login endpoint
    (``http://127.0.0.1:PORT``), Graph ``{authority}/graph``. Entra knows one confidential client
    (``client_id``/``client_secret``)."""
    return Entra(authority, client_id=client_id, client_secret=client_secret).app()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--authority", help="authority URL (default: http://127.0.0.1:{port})")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in until interrupted."""
    run(
        argv,
        description=__doc__,
        default_port=9300,
        add_arguments=_arguments,
        build=lambda args, default_url: create_app(
            args.authority or default_url,
            client_id=args.client_id,
            client_secret=args.client_secret,
        ),
    )


if __name__ == "__main__":
    main()
