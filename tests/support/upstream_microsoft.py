"""A stand-in for the Microsoft identity platform (Entra ID, v2.0 endpoints) and a bit of Graph.

The authority is ``http://127.0.0.1:PORT`` (where Entra has ``https://login.microsoftonline.com``)
and Graph is ``http://127.0.0.1:PORT/graph`` (for ``https://graph.microsoft.com``). It speaks
OpenID Connect with Entra's quirks:

* every URL names a tenant: ``common``, ``organizations``, ``consumers`` or a tenant GUID.
  ``/{tenant}/v2.0/.well-known/openid-configuration`` advertises, for ``common`` and
  ``organizations``, the issuer *template* ``{authority}/{tenantid}/v2.0`` (with the braces),
  for ``consumers`` the personal-accounts tenant, for a GUID that tenant; an unknown tenant
  gets ``AADSTS90002``. Discovery has no ``authorization_response_iss_parameter_supported``
  and the authorization response carries no ``iss``;
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

A JSON control API under ``/_control/`` lets a test choose the user, make the next response
misbehave (an ID token whose ``iss`` names another tenant, the ``{tenantid}`` template or the
v1 issuer; a 500 from the token endpoint) and inspect the requests received.

Run it from the repository root with ``python -m tests.support.upstream_microsoft --port 9300``.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

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
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_PKCE_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
_PHOTO_KINDS = ("png", "jpeg")

TINY_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\xdac0N;\x03\x00\x025\x01f\xb4o\x97\x9e\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
"""A valid 1x1 RGB PNG (one blue pixel)."""

TINY_JPEG = bytes.fromhex(
    "ffd8"  # SOI
    "ffe000104a46494600010100000100010000"  # APP0: JFIF 1.1, no thumbnail
    "ffdb004300"  # DQT: table 0, 8-bit values, all ones
    "01010101010101010101010101010101010101010101010101010101010101010101"
    "010101010101010101010101010101010101010101010101010101010101"
    "ffc0000b080001000101011100"  # SOF0: 8 bits, 1x1, one component (1x1 sampling, table 0)
    "ffc40014000100000000000000000000000000000000"  # DHT: DC table 0, one 1-bit code: 0x00
    "ffc40014100100000000000000000000000000000000"  # DHT: AC table 0, one 1-bit code: EOB
    "ffda0008010100003f00"  # SOS: component 1 with tables 0/0, coefficients 0..63
    "3f"  # DC difference 0 ("0"), end of block ("0"), padded with ones
    "ffd9"  # EOI
)
"""A valid 1x1 baseline greyscale JPEG (one mid-grey pixel)."""


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


def _validate_user(body: dict[str, Any]) -> str | None:
    """Return what is wrong with a ``/_control/user`` body, or None."""
    for name in ("tid", "oid"):
        if not isinstance(body.get(name), str) or not _GUID.fullmatch(body[name]):
            return f"'{name}' must be a lower-case GUID"
    for name in ("sub", "name", "given_name", "family_name", "preferred_username", "email"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"'{name}' must be a string or null"
    if body.get("xms_edov") is not None and not isinstance(body["xms_edov"], bool):
        return "'xms_edov' must be a boolean or null"
    if body.get("photo") is not None and body["photo"] not in _PHOTO_KINDS:
        return "'photo' must be 'png', 'jpeg' or null"
    if body.get("extra_claims") is not None and not isinstance(body["extra_claims"], dict):
        return "'extra_claims' must be an object"
    return None


@dataclass
class _AuthorizationCode:
    """What an authorization code was issued for."""

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
    """A refresh token and the grant it renews."""

    client_id: str
    scope: str
    user: dict[str, Any]
    session_id: str


@dataclass
class _State:
    """Mutable state of the stand-in."""

    user: dict[str, Any] = field(default_factory=default_user)
    misbehave: str | None = None
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    redeemed_codes: set[str] = field(default_factory=set)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        """Restore the default user and behaviour; forget every grant and request."""
        self.user = default_user()
        self.misbehave = None
        self.codes.clear()
        self.redeemed_codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.requests.clear()
        self.authorize_requests.clear()

    def take(self, *modes: str) -> str | None:
        """Consume the pending misbehaviour if it is one of ``modes``."""
        if self.misbehave in modes:
            mode, self.misbehave = self.misbehave, None
            return mode
        return None


def _b64url(data: bytes) -> str:
    """Base64url-encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    """Return the PKCE S256 challenge for ``verifier`` (RFC 7636 §4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _form_value(form: FormData, name: str) -> str | None:
    """Return a text form field, or None when it is absent, empty or a file."""
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def _is_http_url(value: str) -> bool:
    """Tell whether ``value`` is an absolute http(s) URL without a fragment."""
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    """302-redirect to ``uri`` with ``params`` added to its query string."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return RedirectResponse(location, status_code=302, headers=_NO_STORE)


def _timestamp() -> str:
    """Entra's error timestamp format, ``2024-05-01 12:34:56Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _signing_key() -> tuple[RSAKey, dict[str, Any]]:
    """A fresh RSA key with a self-signed certificate, and its public JWK as Entra shows it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(private, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    thumbprint = _b64url(hashlib.sha1(der).digest())  # x5t is a SHA-1 thumbprint (RFC 7517)
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


async def _json_object(request: Request) -> dict[str, Any] | None:
    """Parse the request body as a JSON object, or return None."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def create_app(
    authority: str,
    *,
    client_id: str = "broker",
    client_secret: str = "broker-secret",
) -> Starlette:
    """Build the stand-in as a Starlette app.

    ``authority`` is the base URL of every login endpoint (``http://127.0.0.1:PORT``); Graph is
    ``{authority}/graph``. Entra knows one confidential client (``client_id``/``client_secret``).
    """
    authority = authority.rstrip("/")
    graph = f"{authority}/graph"
    signing_key, public_jwk = _signing_key()
    state = _State()

    def issuer_of(tenant: str) -> str | None:
        """The issuer a tenant path advertises, or None for an unknown tenant."""
        tenant = tenant.lower()
        if tenant in MULTI_TENANT:
            return f"{authority}/{TENANT_TEMPLATE}/v2.0"
        if tenant == "consumers":
            return f"{authority}/{CONSUMERS_TENANT}/v2.0"
        if _GUID.fullmatch(tenant):
            return f"{authority}/{tenant}/v2.0"
        return None

    def aad_error(error: str, code: int, message: str, status_code: int = 400) -> JSONResponse:
        """An Entra token-endpoint error (``error_codes``, ``trace_id``, ``correlation_id``…)."""
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
                "error_uri": f"{authority}/error?code={code}",
            },
            status_code=status_code,
            headers=_NO_STORE,
        )

    def unknown_tenant(tenant: str) -> JSONResponse:
        return aad_error(
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def error_page(code: int, message: str) -> HTMLResponse:
        """The page Entra shows instead of redirecting to an untrusted redirect_uri."""
        return HTMLResponse(
            f"<h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS{code}: "
            f"{message}</p>",
            status_code=400,
        )

    # ---------------------------------------------------------------- discovery and keys

    def record(request: Request, kind: str, **details: Any) -> None:
        authorization = request.headers.get("authorization")
        state.requests.append(
            {
                "kind": kind,
                "method": request.method,
                "path": request.url.path,
                **details,
                "authorization": authorization.split(" ", 1)[0] if authorization else None,
            }
        )

    async def discovery(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        record(request, "discovery", tenant=tenant)
        issuer = issuer_of(tenant)
        if issuer is None:
            return unknown_tenant(tenant)
        base = f"{authority}/{tenant}"
        single_tenant = _GUID.fullmatch(tenant.lower()) is not None
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": issuer,
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{graph}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": [
                    "sub",
                    "iss",
                    "cloud_instance_name",
                    "cloud_instance_host_name",
                    "cloud_graph_host_name",
                    "msgraph_host",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "acr",
                    "nonce",
                    "preferred_username",
                    "name",
                    "tid",
                    "ver",
                    "at_hash",
                    "c_hash",
                    "email",
                ],
                "kerberos_endpoint": f"{base}/kerberos",
                "tenant_region_scope": "EU" if single_tenant else None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": urlsplit(graph).netloc,
                "rbac_url": "https://pas.windows.net",
            }
        )

    async def keys(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        record(request, "keys", tenant=tenant)
        issuer = issuer_of(tenant)
        if issuer is None:
            return unknown_tenant(tenant)
        return JSONResponse({"keys": [{**public_jwk, "issuer": issuer}]})

    # ---------------------------------------------------------------- authorize

    async def authorize(request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        tenant = request.path_params["tenant"]
        if issuer_of(tenant) is None:
            return error_page(90002, f"Tenant '{tenant}' not found.")
        query = request.query_params
        requested_client = query.get("client_id", "")
        if requested_client != client_id:
            return error_page(
                700016,
                f"Application with identifier '{requested_client}' was not found in the "
                f"directory '{tenant}'.",
            )
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not _is_http_url(redirect_uri):
            return error_page(
                50011,
                f"The redirect URI '{redirect_uri or ''}' specified in the request does not "
                "match the redirect URIs configured for the application.",
            )
        state.authorize_requests.append({"tenant": tenant, "params": dict(query)})
        request_state = query.get("state")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description}
            if request_state is not None:
                params["state"] = request_state
            return _redirect(redirect_uri, params)

        response_mode = query.get("response_mode", "query")
        if response_mode != "query":
            return fail(
                "invalid_request",
                f"this stand-in only answers response_mode=query, not {response_mode}",
            )
        response_type = query.get("response_type", "")
        if response_type != "code":
            return fail(
                "unsupported_response_type",
                f"AADSTS700054: response_type '{response_type}' is not enabled for the "
                "application.",
            )
        scope = query.get("scope", "")
        if not scope:
            return fail("invalid_request", "AADSTS90014: The required field 'scope' is missing.")
        code_challenge = query.get("code_challenge")
        if not code_challenge:
            return fail(
                "invalid_request", "AADSTS90014: The required field 'code_challenge' is missing."
            )
        if query.get("code_challenge_method") != "S256":
            return fail("invalid_request", "this stand-in requires code_challenge_method=S256")
        if not _PKCE_S256_CHALLENGE.fullmatch(code_challenge):
            return fail(
                "invalid_request", "AADSTS501491: Invalid size of Code_Challenge parameter."
            )
        if state.take("deny"):
            return fail("access_denied", "AADSTS65004: User declined to consent to access the app.")
        now = time.time()
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code = "1.A" + secrets.token_urlsafe(48)
        session_id = str(uuid.uuid4())
        state.codes[code] = _AuthorizationCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            nonce=query.get("nonce"),
            scope=scope,
            user=dict(state.user),
            session_id=session_id,
            expires_at=now + AUTHORIZATION_CODE_LIFETIME,
        )
        params = {"code": code}
        if request_state is not None:
            params["state"] = request_state
        params["session_state"] = session_id
        return _redirect(redirect_uri, params)

    # ---------------------------------------------------------------- token

    def authenticate_client(request: Request, form: FormData) -> Response | None:
        """client_secret_basic or client_secret_post; an Entra error response on failure."""
        authorization = request.headers.get("authorization", "")
        presented_id = _form_value(form, "client_id")
        presented_secret = _form_value(form, "client_secret")
        if authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            raw_id, _, raw_secret = decoded.partition(":")
            basic_id, presented_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if presented_id is not None and presented_id != basic_id:
                return aad_error(
                    "invalid_request",
                    900023,
                    "Specified client_id does not match the client_id in the Authorization header.",
                )
            presented_id = basic_id
        if presented_id is None:
            return aad_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if not secrets.compare_digest(presented_id.encode(), client_id.encode()):
            return aad_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{presented_id}' was not found in the directory.",
            )
        if not presented_secret:
            return aad_error(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
                status_code=401,
            )
        if not secrets.compare_digest(presented_secret.encode(), client_secret.encode()):
            return aad_error(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
                status_code=401,
            )
        return None

    def id_token_for(user: dict[str, Any], nonce: str | None, session_id: str) -> str:
        """Sign an ID token for ``user``, its ``iss`` broken if a misbehaviour is armed."""
        now = int(time.time())
        tid = user["tid"]
        issuer = f"{authority}/{tid}/v2.0"
        mode = state.take(*_ISS_MODES)
        if mode == "iss_other_tenant":
            other = OTHER_TENANT if tid != OTHER_TENANT else DEFAULT_TENANT
            issuer = f"{authority}/{other}/v2.0"
        elif mode == "iss_template":
            issuer = f"{authority}/{TENANT_TEMPLATE}/v2.0"
        elif mode == "iss_v1":
            issuer = f"https://sts.windows.net/{tid}/"
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "aio": secrets.token_urlsafe(48),
        }
        for name in ("email", "name"):
            if user.get(name) is not None:
                claims[name] = user[name]
        if nonce is not None:
            claims["nonce"] = nonce
        claims["oid"] = user["oid"]
        if user.get("preferred_username") is not None:
            claims["preferred_username"] = user["preferred_username"]
        claims.update(
            {
                "rh": "1.A" + secrets.token_urlsafe(32) + ".",
                "sid": session_id,
                "sub": subject_of(user),
                "tid": tid,
                "uti": secrets.token_urlsafe(16),
                "ver": "2.0",
            }
        )
        if user.get("xms_edov") is not None:
            claims["xms_edov"] = user["xms_edov"]
        claims.update(user.get("extra_claims") or {})
        header = {"typ": "JWT", "alg": "RS256", "kid": public_jwk["kid"]}
        return jwt.encode(header, claims, signing_key, algorithms=["RS256"])

    def subject_of(user: dict[str, Any]) -> str:
        """The pairwise ``sub``: the user's own if set, else derived from tid, oid and client."""
        if user.get("sub"):
            return str(user["sub"])
        digest = hashlib.sha256(f"{user['tid']}:{user['oid']}:{client_id}".encode()).digest()
        return _b64url(digest)

    def issue_tokens(
        scope: str, user: dict[str, Any], nonce: str | None, session_id: str
    ) -> Response:
        access_token = "EwB" + secrets.token_urlsafe(96)
        state.access_tokens[access_token] = _AccessToken(
            client_id=client_id,
            scope=scope,
            user=dict(user),
            expires_at=time.time() + ACCESS_TOKEN_LIFETIME,
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": _granted_scope(scope),
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "ext_expires_in": ACCESS_TOKEN_LIFETIME,
            "access_token": access_token,
        }
        scopes = scope.split()
        if "offline_access" in scopes:
            refresh_token = "1.A" + secrets.token_urlsafe(160)
            state.refresh_tokens[refresh_token] = _RefreshToken(
                client_id=client_id, scope=scope, user=dict(user), session_id=session_id
            )
            body["refresh_token"] = refresh_token
        if "openid" in scopes:
            body["id_token"] = id_token_for(user, nonce, session_id)
        return JSONResponse(body, headers=_NO_STORE)

    async def token(request: Request) -> Response:
        """Exchange an authorization code or a refresh token for tokens."""
        tenant = request.path_params["tenant"]
        form = await request.form()
        record(
            request,
            "token",
            tenant=tenant,
            form={name: value for name, value in form.items() if isinstance(value, str)},
        )
        if issuer_of(tenant) is None:
            return unknown_tenant(tenant)
        if state.take("token_error_500"):
            return aad_error(
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
                status_code=500,
            )
        problem = authenticate_client(request, form)
        if problem is not None:
            return problem
        grant_type = _form_value(form, "grant_type")
        if grant_type == "authorization_code":
            return redeem_code(form)
        if grant_type == "refresh_token":
            return refresh(form)
        if grant_type is None:
            return aad_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        return aad_error(
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def redeem_code(form: FormData) -> Response:
        code = _form_value(form, "code")
        if code is None:
            return aad_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code'.",
            )
        if code in state.redeemed_codes:
            return aad_error(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
            )
        grant = state.codes.pop(code, None)
        if grant is None:
            return aad_error(
                "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        state.redeemed_codes.add(code)
        if grant.expires_at <= time.time():
            return aad_error(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
            )
        if _form_value(form, "redirect_uri") != grant.redirect_uri:
            return aad_error(
                "invalid_grant",
                50011,
                "The redirect URI specified in the request does not match the redirect URI "
                "of the authorization request.",
            )
        verifier = _form_value(form, "code_verifier")
        if (
            verifier is None
            or not _PKCE_VERIFIER.fullmatch(verifier)
            or not secrets.compare_digest(_s256(verifier), grant.code_challenge)
        ):
            return aad_error(
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the "
                "authorization request for PKCE.",
            )
        return issue_tokens(grant.scope, grant.user, grant.nonce, grant.session_id)

    def refresh(form: FormData) -> Response:
        presented = _form_value(form, "refresh_token")
        if presented is None:
            return aad_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
            )
        grant = state.refresh_tokens.get(presented)
        if grant is None:
            return aad_error(
                "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        scope = grant.scope
        requested = _form_value(form, "scope")
        if requested:
            extra = set(requested.split()) - set(grant.scope.split()) - {"offline_access"}
            if extra:
                return aad_error(
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the application for "
                    f"'{' '.join(sorted(extra))}'.",
                )
            scope = requested
        # Entra hands out a new refresh token on every use; the presented one stays valid.
        return issue_tokens(scope, grant.user, None, grant.session_id)

    # ---------------------------------------------------------------- logout

    async def logout(request: Request) -> Response:
        record(
            request,
            "logout",
            tenant=request.path_params["tenant"],
            query=dict(request.query_params),
        )
        target = request.query_params.get("post_logout_redirect_uri")
        if target and _is_http_url(target):
            extra = {}
            if "state" in request.query_params:
                extra["state"] = request.query_params["state"]
            return _redirect(target, extra)
        return HTMLResponse("<h1>You signed out of your account</h1>")

    # ---------------------------------------------------------------- Graph

    def graph_error(status_code: int, code: str, message: str) -> JSONResponse:
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

    def graph_caller(request: Request) -> _AccessToken | Response:
        """The access token a Graph request carries, or Graph's 401."""
        record(request, "graph")
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() != "bearer " or not authorization[7:].strip():
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        grant = state.access_tokens.get(authorization[7:].strip())
        if grant is None:
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure."
            )
        if grant.expires_at <= time.time():
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return grant

    async def me(request: Request) -> Response:
        grant = graph_caller(request)
        if isinstance(grant, Response):
            return grant
        user = grant.user
        return JSONResponse(
            {
                "@odata.context": f"{graph}/v1.0/$metadata#users/$entity",
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

    async def photo(request: Request) -> Response:
        """``/me/photo/$value``: the photo's bytes, or 404 ``ImageNotFound``."""
        grant = graph_caller(request)
        if isinstance(grant, Response):
            return grant
        kind = grant.user.get("photo")
        if kind == "png":
            return Response(TINY_PNG, media_type="image/png")
        if kind == "jpeg":
            return Response(TINY_JPEG, media_type="image/jpeg")
        return graph_error(
            404,
            "ImageNotFound",
            "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' "
            "was thrown.",
        )

    async def userinfo(request: Request) -> Response:
        """Graph's OpenID Connect UserInfo endpoint."""
        grant = graph_caller(request)
        if isinstance(grant, Response):
            return grant
        user = grant.user
        body: dict[str, Any] = {"sub": subject_of(user)}
        for name in ("name", "family_name", "given_name"):
            if user.get(name) is not None:
                body[name] = user[name]
        body["picture"] = f"{graph}/v1.0/me/photo/$value"
        if user.get("email") is not None:
            body["email"] = user["email"]
        return JSONResponse(body)

    # ---------------------------------------------------------------- control

    async def control_user(request: Request) -> Response:
        """Set the user the next authorizations are issued for (fields not given are absent)."""
        body = await _json_object(request)
        problem = "body must be a JSON object" if body is None else _validate_user(body)
        if body is None or problem is not None:
            return JSONResponse({"error": problem}, status_code=400)
        state.user = {name: value for name, value in body.items() if value is not None}
        return JSONResponse({"user": state.user})

    async def control_misbehave(request: Request) -> Response:
        body = await _json_object(request)
        mode = body.get("mode") if body else None
        if mode not in MISBEHAVE_MODES:
            return JSONResponse({"error": f"mode must be one of {sorted(MISBEHAVE_MODES)}"}, 400)
        state.misbehave = mode
        return JSONResponse({"mode": mode})

    async def control_requests(request: Request) -> Response:
        """Discovery, keys, token, logout and Graph requests, oldest first (not authorize)."""
        return JSONResponse(state.requests)

    async def control_authorize_requests(request: Request) -> Response:
        """``{"tenant": ..., "params": {...}}`` for every accepted authorization request."""
        return JSONResponse(state.authorize_requests)

    async def control_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    return Starlette(
        routes=[
            Route("/_control/user", control_user, methods=["POST"]),
            Route("/_control/misbehave", control_misbehave, methods=["POST"]),
            Route("/_control/requests", control_requests, methods=["GET"]),
            Route("/_control/authorize_requests", control_authorize_requests, methods=["GET"]),
            Route("/_control/reset", control_reset, methods=["POST"]),
            Route("/graph/oidc/userinfo", userinfo, methods=["GET", "POST"]),
            Route("/graph/v1.0/me", me, methods=["GET"]),
            Route("/graph/v1.0/me/photo/$value", photo, methods=["GET"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", discovery, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/authorize", authorize, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/logout", logout, methods=["GET", "POST"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in with uvicorn until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--authority", help="authority URL (default: http://127.0.0.1:{port})")
    parser.add_argument("--client-id", default="broker")
    parser.add_argument("--client-secret", default="broker-secret")
    args = parser.parse_args(argv)
    app = create_app(
        args.authority or f"http://127.0.0.1:{args.port}",
        client_id=args.client_id,
        client_secret=args.client_secret,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
