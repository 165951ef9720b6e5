"""A stand-in for github.com and the GitHub REST API, both on one port, for tests.

It is addressed the way a GitHub Enterprise Server is: the web flow lives at
``http://127.0.0.1:PORT/login/oauth/...`` and the REST API at ``http://127.0.0.1:PORT/api/v3``.
It speaks GitHub's own dialect of OAuth 2.0, not OpenID Connect:

* ``GET /login/oauth/authorize`` auto-approves (no UI) and redirects back with ``code`` and
  ``state`` only (no ``iss``); PKCE ``S256`` is optional, but a code issued for a
  ``code_challenge`` is only redeemable with the matching ``code_verifier``. An unknown
  ``client_id`` gets a 404 page, as on GitHub.
* ``POST /login/oauth/access_token`` answers ``application/x-www-form-urlencoded`` unless the
  request says ``Accept: application/json``, and reports errors (``bad_verification_code``,
  ``incorrect_client_credentials``, ``redirect_uri_mismatch``, ``bad_refresh_token``) with
  HTTP **200** and an ``error`` field. Two token modes: *expiring* (a GitHub App, the default)
  issues an 8-hour ``ghu_`` token with a 6-month ``ghr_`` refresh token that rotates (using it
  kills it and the access token issued with it); *non-expiring* (a classic OAuth App) issues a
  ``gho_`` token that never expires, with the comma-separated ``scope`` GitHub reports.
* The REST API: ``/user``, ``/user/emails``, ``/user/orgs``, ``/user/teams`` (paginated with
  ``per_page``/``page`` and a ``Link`` header), ``/meta`` (no authentication, a health probe),
  and ``DELETE /applications/{client_id}/token`` and ``.../grant`` (HTTP Basic as the app) to
  revoke. Tokens are accepted as ``Authorization: Bearer X`` or ``Authorization: token X``; a
  bad one gets 401 ``{"message": "Bad credentials", ...}``.

A JSON control API under ``/_control/`` lets a test choose the user, the token mode and a
misbehaviour, expire the access tokens, and inspect the requests received.

Run it from the repository root with ``python -m tests.support.upstream_github --port 9200``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CODE_LIFETIME = 600
"""Seconds an authorization code stays redeemable (GitHub: 10 minutes)."""

EXPIRING_TOKEN_LIFETIME = 28800
"""``expires_in`` of a GitHub App user access token (8 hours)."""

REFRESH_TOKEN_LIFETIME = 15897600
"""``refresh_token_expires_in`` of a GitHub App refresh token (6 months)."""

TOKEN_MODES = frozenset({"expiring", "non_expiring"})
"""Modes accepted by ``POST /_control/token_mode``."""

ONE_SHOT_MODES = frozenset({"token_error_500", "deny"})
"""Misbehaviours that apply to the next matching request only."""

STICKY_MODES = frozenset({"emails_403", "meta_503"})
"""Misbehaviours that stay on until ``POST /_control/reset``."""

MISBEHAVE_MODES = ONE_SHOT_MODES | STICKY_MODES
"""Modes accepted by ``POST /_control/misbehave``."""

DOCS = "https://docs.github.com"
_TOKEN_ERRORS_DOC = (
    f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
)
_TOKEN_ERRORS: dict[str, tuple[str, str]] = {
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        f"{_TOKEN_ERRORS_DOC}#bad-verification-code",
    ),
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        f"{_TOKEN_ERRORS_DOC}#incorrect-client-credentials",
    ),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        f"{_TOKEN_ERRORS_DOC}#redirect-uri-mismatch2",
    ),
    "bad_refresh_token": ("The refresh token passed is incorrect or expired.", DOCS),
    "unsupported_grant_type": ("The grant type is not supported.", DOCS),
}
_AUTHORIZE_ERRORS_DOC = (
    f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
)
_BASE62 = string.ascii_letters + string.digits
_TOKEN_HEADERS = {"Cache-Control": "max-age=0, private, must-revalidate"}
_DEFAULT_PER_PAGE = 30
_MAX_PER_PAGE = 100

TINY_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\xdac0N;\x03\x00\x025\x01f\xb4o\x97\x9e\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
"""A valid 1x1 PNG, served as every avatar at ``/avatars/u/{id}``."""


def default_user() -> dict[str, Any]:
    """The account authorizations are issued for until a test picks one.

    Its public profile email is hidden (``email`` null, as for most accounts); ``/user/emails``
    lists a verified primary address and the account's noreply address.
    """
    return {
        "id": 583231,
        "login": "octocat",
        "name": "The Octocat",
        "avatar_url": None,
        "email": None,
        "emails": [
            {
                "email": "octocat@example.com",
                "primary": True,
                "verified": True,
                "visibility": "private",
            },
            {
                "email": "583231+octocat@users.noreply.github.com",
                "primary": False,
                "verified": True,
                "visibility": None,
            },
        ],
        "orgs": ["acme"],
        "teams": [{"org": "acme", "slug": "platform", "name": "Platform"}],
    }


@dataclass
class _AuthorizationCode:
    """What an authorization code was issued for."""

    client_id: str
    redirect_uri: str
    code_challenge: str | None
    scope: str
    user_id: int
    expires_at: float


@dataclass
class _AccessToken:
    """A user access token: whose it is, what it may do and until when."""

    client_id: str
    user_id: int
    scope: str
    expires_at: float | None


@dataclass
class _RefreshToken:
    """A ``ghr_`` refresh token and the ``ghu_`` access token issued with it."""

    client_id: str
    user_id: int
    scope: str
    access_token: str
    expires_at: float


@dataclass
class _State:
    """Mutable state of the stand-in."""

    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    current_user: int = 0
    token_mode: str = "expiring"
    one_shot: str | None = None
    sticky: set[str] = field(default_factory=set)
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Restore the default user, mode and behaviour; forget every grant and request."""
        user = default_user()
        self.users = {user["id"]: user}
        self.current_user = user["id"]
        self.token_mode = "expiring"
        self.one_shot = None
        self.sticky = set()
        self.codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.requests.clear()
        self.authorize_requests.clear()

    def take(self, mode: str) -> bool:
        """Consume the pending one-shot misbehaviour if it is ``mode``."""
        if self.one_shot == mode:
            self.one_shot = None
            return True
        return False


def _token(prefix: str, length: int) -> str:
    """A GitHub-style token: a type prefix and base62 characters (``ghu_…``)."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


def _s256(verifier: str) -> str:
    """Return the PKCE S256 challenge for ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _node_id(kind: str, number: int) -> str:
    """A legacy GraphQL node id, e.g. ``MDQ6VXNlcjU4MzIzMQ==`` for user 583231."""
    return base64.b64encode(f"{len(kind):02d}:{kind}{number}".encode()).decode("ascii")


def _stable_id(name: str) -> int:
    """A stable positive integer id for an organization or team name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "big") + 1000


def _form_value(form: FormData, name: str) -> str | None:
    """Return a text form field, or None when it is absent, empty or a file."""
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def _github_scopes(raw: str) -> list[str]:
    """The requested scopes (GitHub accepts spaces or commas between them), deduplicated."""
    seen: list[str] = []
    for scope in raw.replace(",", " ").split():
        if scope not in seen:
            seen.append(scope)
    return seen


def _is_http_url(value: str) -> bool:
    """Tell whether ``value`` is an absolute http(s) URL without a fragment."""
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    """302-redirect to ``uri`` with ``params`` added to its query string."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=302)


def _api_error(status: int, message: str, documentation: str = f"{DOCS}/rest") -> JSONResponse:
    """A REST API error body as GitHub sends it."""
    return JSONResponse(
        {"message": message, "documentation_url": documentation, "status": str(status)},
        status_code=status,
    )


async def _json_object(request: Request) -> dict[str, Any] | None:
    """Parse the request body as a JSON object, or return None."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _validate_user(body: dict[str, Any]) -> str | None:
    """Return what is wrong with a ``/_control/user`` body, or None."""
    user_id = body.get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        return "'id' must be a positive integer"
    if not isinstance(body.get("login"), str) or not body["login"]:
        return "'login' must be a non-empty string"
    for name in ("name", "avatar_url", "email"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"'{name}' must be a string or null"
    emails = body.get("emails", [])
    if not isinstance(emails, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("email"), str) for entry in emails
    ):
        return "'emails' must be a list of objects with an 'email'"
    orgs = body.get("orgs", [])
    if not isinstance(orgs, list) or not all(isinstance(org, str) for org in orgs):
        return "'orgs' must be a list of organization logins"
    teams = body.get("teams", [])
    if not isinstance(teams, list) or not all(
        isinstance(team, dict)
        and isinstance(team.get("org"), str)
        and isinstance(team.get("slug"), str)
        for team in teams
    ):
        return "'teams' must be a list of {'org': str, 'slug': str}"
    return None


def create_app(
    base_url: str,
    *,
    client_id: str = "broker",
    client_secret: str = "broker-secret",
) -> Starlette:
    """Build the stand-in as a Starlette app.

    ``base_url`` is the web origin (``http://127.0.0.1:PORT``); the API is ``{base_url}/api/v3``.
    GitHub knows one OAuth client (``client_id``/``client_secret``).
    """
    base = base_url.rstrip("/")
    api = f"{base}/api/v3"
    state = _State()

    # ---------------------------------------------------------------- the web flow

    async def authorize(request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        query = request.query_params
        if query.get("client_id") != client_id:
            return HTMLResponse("<h1>404</h1><p>Not Found</p>", status_code=404)
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not _is_http_url(redirect_uri):
            # GitHub would fall back to the registered callback URL; this stand-in has none.
            return HTMLResponse(
                "<h1>Bad request</h1><p>redirect_uri is required</p>", status_code=400
            )
        state.authorize_requests.append(dict(query))
        request_state = query.get("state")

        def fail(error: str, description: str, anchor: str) -> Response:
            params = {
                "error": error,
                "error_description": description,
                "error_uri": f"{_AUTHORIZE_ERRORS_DOC}#{anchor}",
            }
            if request_state is not None:
                params["state"] = request_state
            return _redirect(redirect_uri, params)

        code_challenge = query.get("code_challenge")
        if code_challenge is not None and query.get("code_challenge_method", "S256") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256.", "pkce")
        if state.take("deny"):
            return fail(
                "access_denied", "The user has denied your application access.", "access-denied"
            )
        now = time.time()
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code = "".join(secrets.choice("0123456789abcdef") for _ in range(20))
        state.codes[code] = _AuthorizationCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            scope=query.get("scope", ""),
            user_id=state.current_user,
            expires_at=now + CODE_LIFETIME,
        )
        params = {"code": code}
        if request_state is not None:
            params["state"] = request_state
        return _redirect(redirect_uri, params)

    def token_reply(request: Request, body: dict[str, Any]) -> Response:
        """JSON if the client asked for it, else form-encoded — always HTTP 200, like GitHub."""
        if "application/json" in request.headers.get("accept", "").lower():
            return JSONResponse(body, headers=_TOKEN_HEADERS)
        return Response(
            urlencode({name: "" if value is None else str(value) for name, value in body.items()}),
            media_type="application/x-www-form-urlencoded; charset=utf-8",
            headers=_TOKEN_HEADERS,
        )

    def token_error(request: Request, error: str) -> Response:
        description, uri = _TOKEN_ERRORS[error]
        return token_reply(
            request, {"error": error, "error_description": description, "error_uri": uri}
        )

    def client_credentials(request: Request, form: FormData) -> bool:
        """Check the app's credentials, posted in the form or sent with HTTP Basic."""
        posted_id = _form_value(form, "client_id")
        presented_id, presented_secret = posted_id, _form_value(form, "client_secret")
        authorization = request.headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            raw_id, _, raw_secret = decoded.partition(":")
            presented_id, presented_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if posted_id is not None and posted_id != presented_id:
                return False
        if presented_id is None or presented_secret is None:
            return False
        return secrets.compare_digest(
            presented_id.encode(), client_id.encode()
        ) and secrets.compare_digest(presented_secret.encode(), client_secret.encode())

    def issue(request: Request, *, user_id: int, scope: str, expiring: bool) -> Response:
        """Mint a token (pair) in the current mode and answer the token request."""
        now = time.time()
        if not expiring:
            access = _token("gho_", 36)
            granted = ",".join(_github_scopes(scope))
            state.access_tokens[access] = _AccessToken(client_id, user_id, granted, None)
            return token_reply(
                request, {"access_token": access, "scope": granted, "token_type": "bearer"}
            )
        access, refresh = _token("ghu_", 36), _token("ghr_", 76)
        state.access_tokens[access] = _AccessToken(
            client_id, user_id, "", now + EXPIRING_TOKEN_LIFETIME
        )
        state.refresh_tokens[refresh] = _RefreshToken(
            client_id, user_id, scope, access, now + REFRESH_TOKEN_LIFETIME
        )
        return token_reply(
            request,
            {
                "access_token": access,
                "expires_in": EXPIRING_TOKEN_LIFETIME,
                "refresh_token": refresh,
                "refresh_token_expires_in": REFRESH_TOKEN_LIFETIME,
                "scope": "",
                "token_type": "bearer",
            },
        )

    async def access_token(request: Request) -> Response:
        """Redeem a code or a refresh token (``POST /login/oauth/access_token``)."""
        form = await request.form()
        authorization = request.headers.get("authorization")
        state.requests.append(
            {
                "kind": "token",
                "method": request.method,
                "path": request.url.path,
                "form": {name: value for name, value in form.items() if isinstance(value, str)},
                "accept": request.headers.get("accept"),
                "authorization": authorization.split(" ", 1)[0] if authorization else None,
            }
        )
        if state.take("token_error_500"):
            return HTMLResponse("<h1>Internal server error</h1>", status_code=500)
        if not client_credentials(request, form):
            return token_error(request, "incorrect_client_credentials")
        grant_type = _form_value(form, "grant_type") or "authorization_code"
        if grant_type == "refresh_token":
            return refresh(request, form)
        if grant_type != "authorization_code":
            return token_error(request, "unsupported_grant_type")
        code = _form_value(form, "code")
        grant = state.codes.pop(code, None) if code else None
        if grant is None or grant.expires_at <= time.time() or grant.client_id != client_id:
            return token_error(request, "bad_verification_code")
        if _form_value(form, "redirect_uri") != grant.redirect_uri:
            return token_error(request, "redirect_uri_mismatch")
        if grant.code_challenge is not None:
            verifier = _form_value(form, "code_verifier")
            if verifier is None or not secrets.compare_digest(
                _s256(verifier), grant.code_challenge
            ):
                return token_error(request, "bad_verification_code")
        return issue(
            request,
            user_id=grant.user_id,
            scope=grant.scope,
            expiring=state.token_mode == "expiring",
        )

    def refresh(request: Request, form: FormData) -> Response:
        """``grant_type=refresh_token``: the refresh token and its access token die."""
        presented = _form_value(form, "refresh_token")
        grant = state.refresh_tokens.pop(presented, None) if presented else None
        if grant is None or grant.expires_at <= time.time() or grant.client_id != client_id:
            return token_error(request, "bad_refresh_token")
        state.access_tokens.pop(grant.access_token, None)
        return issue(request, user_id=grant.user_id, scope=grant.scope, expiring=True)

    # ---------------------------------------------------------------- the REST API

    def record_api(request: Request) -> None:
        authorization = request.headers.get("authorization")
        state.requests.append(
            {
                "kind": "api",
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "accept": request.headers.get("accept"),
                "authorization": authorization.split(" ", 1)[0] if authorization else None,
            }
        )

    def api_headers(grant: _AccessToken) -> dict[str, str]:
        headers = {
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Used": "1",
            "X-RateLimit-Resource": "core",
        }
        # Classic OAuth App tokens report their scopes; GitHub App tokens have none.
        headers["X-OAuth-Scopes"] = ", ".join(grant.scope.split(",")) if grant.scope else ""
        return headers

    def authenticated(request: Request, documentation: str) -> _AccessToken | Response:
        """The access token the request carries, or the 401 GitHub answers."""
        record_api(request)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in {"bearer", "token"} or not value.strip():
            return _api_error(401, "Requires authentication", documentation)
        grant = state.access_tokens.get(value.strip())
        if grant is None or (grant.expires_at is not None and grant.expires_at <= time.time()):
            return _api_error(401, "Bad credentials")
        return grant

    def paged(request: Request, items: list[dict[str, Any]], headers: dict[str, str]) -> Response:
        """One page of ``items`` with GitHub's ``Link`` header."""
        try:
            per_page = int(request.query_params.get("per_page", _DEFAULT_PER_PAGE))
            page = max(int(request.query_params.get("page", 1)), 1)
        except ValueError:
            per_page, page = _DEFAULT_PER_PAGE, 1
        per_page = min(max(per_page, 1), _MAX_PER_PAGE)
        last = max((len(items) + per_page - 1) // per_page, 1)
        links = []

        def page_url(number: int) -> str:
            query = {**request.query_params, "per_page": str(per_page), "page": str(number)}
            return f"{api}{request.url.path.removeprefix('/api/v3')}?{urlencode(query)}"

        if page < last:
            links += [f'<{page_url(page + 1)}>; rel="next"', f'<{page_url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{page_url(1)}>; rel="first"', f'<{page_url(page - 1)}>; rel="prev"']
        if links:
            headers = {**headers, "Link": ", ".join(links)}
        return JSONResponse(items[(page - 1) * per_page : page * per_page], headers=headers)

    def org_json(login: str) -> dict[str, Any]:
        org_id = _stable_id(f"org:{login}")
        return {
            "login": login,
            "id": org_id,
            "node_id": _node_id("Organization", org_id),
            "url": f"{api}/orgs/{login}",
            "repos_url": f"{api}/orgs/{login}/repos",
            "events_url": f"{api}/orgs/{login}/events",
            "hooks_url": f"{api}/orgs/{login}/hooks",
            "issues_url": f"{api}/orgs/{login}/issues",
            "members_url": f"{api}/orgs/{login}/members{{/member}}",
            "public_members_url": f"{api}/orgs/{login}/public_members{{/member}}",
            "avatar_url": f"{base}/avatars/u/{org_id}?v=4",
            "description": None,
        }

    def user_json(user: dict[str, Any]) -> dict[str, Any]:
        login, user_id = user["login"], user["id"]
        return {
            "login": login,
            "id": user_id,
            "node_id": _node_id("User", user_id),
            "avatar_url": user.get("avatar_url") or f"{base}/avatars/u/{user_id}?v=4",
            "gravatar_id": "",
            "url": f"{api}/users/{login}",
            "html_url": f"{base}/{login}",
            "followers_url": f"{api}/users/{login}/followers",
            "following_url": f"{api}/users/{login}/following{{/other_user}}",
            "gists_url": f"{api}/users/{login}/gists{{/gist_id}}",
            "starred_url": f"{api}/users/{login}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/users/{login}/subscriptions",
            "organizations_url": f"{api}/users/{login}/orgs",
            "repos_url": f"{api}/users/{login}/repos",
            "events_url": f"{api}/users/{login}/events{{/privacy}}",
            "received_events_url": f"{api}/users/{login}/received_events",
            "type": "User",
            "user_view_type": "private",
            "site_admin": False,
            "name": user.get("name"),
            "company": None,
            "blog": "",
            "location": None,
            "email": user.get("email"),
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "notification_email": user.get("email"),
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2011-01-25T18:44:36Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }

    async def api_user(request: Request) -> Response:
        grant = authenticated(request, f"{DOCS}/rest/users/users#get-the-authenticated-user")
        if isinstance(grant, Response):
            return grant
        return JSONResponse(user_json(state.users[grant.user_id]), headers=api_headers(grant))

    async def api_emails(request: Request) -> Response:
        documentation = f"{DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user"
        grant = authenticated(request, documentation)
        if isinstance(grant, Response):
            return grant
        if "emails_403" in state.sticky:
            return _api_error(403, "Resource not accessible by integration", documentation)
        emails = [
            {
                "email": entry["email"],
                "primary": bool(entry.get("primary", False)),
                "verified": bool(entry.get("verified", False)),
                "visibility": entry.get("visibility"),
            }
            for entry in state.users[grant.user_id].get("emails", [])
        ]
        return paged(request, emails, api_headers(grant))

    async def api_orgs(request: Request) -> Response:
        grant = authenticated(
            request, f"{DOCS}/rest/orgs/orgs#list-organizations-for-the-authenticated-user"
        )
        if isinstance(grant, Response):
            return grant
        orgs = [org_json(login) for login in state.users[grant.user_id].get("orgs", [])]
        return paged(request, orgs, api_headers(grant))

    async def api_teams(request: Request) -> Response:
        grant = authenticated(
            request, f"{DOCS}/rest/teams/teams#list-teams-for-the-authenticated-user"
        )
        if isinstance(grant, Response):
            return grant
        teams = []
        for team in state.users[grant.user_id].get("teams", []):
            org, slug = team["org"], team["slug"]
            team_id = _stable_id(f"team:{org}/{slug}")
            teams.append(
                {
                    "id": team_id,
                    "node_id": _node_id("Team", team_id),
                    "url": f"{api}/teams/{team_id}",
                    "html_url": f"{base}/orgs/{org}/teams/{slug}",
                    "name": team.get("name") or slug.replace("-", " ").title(),
                    "slug": slug,
                    "description": None,
                    "privacy": "closed",
                    "notification_setting": "notifications_enabled",
                    "permission": "pull",
                    "members_url": f"{api}/teams/{team_id}/members{{/member}}",
                    "repositories_url": f"{api}/teams/{team_id}/repos",
                    "parent": None,
                    "organization": org_json(org),
                }
            )
        return paged(request, teams, api_headers(grant))

    async def api_meta(request: Request) -> Response:
        record_api(request)
        if "meta_503" in state.sticky:
            return _api_error(503, "Service Unavailable")
        return JSONResponse(
            {"verifiable_password_authentication": True, "installed_version": "3.15.0"}
        )

    def app_authenticated(request: Request) -> Response | None:
        """HTTP Basic as the OAuth app, for ``/applications/{client_id}/...``."""
        if request.path_params["client_id"] != client_id:
            return _api_error(404, "Not Found")
        authorization = request.headers.get("authorization", "")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        presented_id, _, presented_secret = decoded.partition(":")
        if authorization[:6].lower() != "basic " or not (
            secrets.compare_digest(presented_id.encode(), client_id.encode())
            and secrets.compare_digest(presented_secret.encode(), client_secret.encode())
        ):
            return _api_error(401, "Bad credentials")
        return None

    async def revoke_body(request: Request, documentation: str) -> str | Response:
        """The ``access_token`` of a revocation request, or GitHub's error for it."""
        record_api(request)
        problem = app_authenticated(request)
        if problem is not None:
            return problem
        body = await _json_object(request)
        presented = body.get("access_token") if body else None
        if not isinstance(presented, str) or not presented:
            return _api_error(
                422, 'Invalid request.\n\n"access_token" wasn\'t supplied.', documentation
            )
        grant = state.access_tokens.get(presented)
        if grant is None or grant.client_id != client_id:
            return _api_error(404, "Not Found", documentation)
        return presented

    async def delete_token(request: Request) -> Response:
        """``DELETE /applications/{client_id}/token``: that access token stops working."""
        presented = await revoke_body(
            request, f"{DOCS}/rest/apps/oauth-applications#delete-an-app-token"
        )
        if isinstance(presented, Response):
            return presented
        del state.access_tokens[presented]
        return Response(status_code=204)

    async def delete_grant(request: Request) -> Response:
        """``DELETE /applications/{client_id}/grant``: every token of that user for the app dies."""
        presented = await revoke_body(
            request, f"{DOCS}/rest/apps/oauth-applications#delete-an-app-authorization"
        )
        if isinstance(presented, Response):
            return presented
        user_id = state.access_tokens[presented].user_id
        for name, token in list(state.access_tokens.items()):
            if token.user_id == user_id:
                del state.access_tokens[name]
        for name, refresh_grant in list(state.refresh_tokens.items()):
            if refresh_grant.user_id == user_id:
                del state.refresh_tokens[name]
        return Response(status_code=204)

    async def avatar(request: Request) -> Response:
        """Every account's avatar: a tiny PNG (GitHub Enterprise serves them at /avatars/u/)."""
        return Response(TINY_PNG, media_type="image/png")

    # ---------------------------------------------------------------- the control API

    async def control_user(request: Request) -> Response:
        """Set the account the next authorizations are issued for (kept by its ``id``)."""
        body = await _json_object(request)
        problem = "body must be a JSON object" if body is None else _validate_user(body)
        if body is None or problem is not None:
            return JSONResponse({"error": problem}, status_code=400)
        user = {
            "id": body["id"],
            "login": body["login"],
            "name": body.get("name"),
            "avatar_url": body.get("avatar_url"),
            "email": body.get("email"),
            "emails": body.get("emails", []),
            "orgs": body.get("orgs", []),
            "teams": body.get("teams", []),
        }
        state.users[user["id"]] = user
        state.current_user = user["id"]
        return JSONResponse({"user": user})

    async def control_token_mode(request: Request) -> Response:
        body = await _json_object(request)
        mode = body.get("mode") if body else None
        if mode not in TOKEN_MODES:
            return JSONResponse({"error": f"mode must be one of {sorted(TOKEN_MODES)}"}, 400)
        state.token_mode = mode
        return JSONResponse({"mode": mode})

    async def control_misbehave(request: Request) -> Response:
        body = await _json_object(request)
        mode = body.get("mode") if body else None
        if mode not in MISBEHAVE_MODES:
            return JSONResponse({"error": f"mode must be one of {sorted(MISBEHAVE_MODES)}"}, 400)
        if mode in STICKY_MODES:
            state.sticky.add(mode)
        else:
            state.one_shot = mode
        return JSONResponse({"mode": mode})

    async def control_expire_tokens(request: Request) -> Response:
        """Expire every expiring access token now; ``{"refresh_tokens": true}``: those too."""
        body = await _json_object(request) or {}
        past = time.time() - 1
        for grant in state.access_tokens.values():
            if grant.expires_at is not None:
                grant.expires_at = past
        if body.get("refresh_tokens") is True:
            for refresh_grant in state.refresh_tokens.values():
                refresh_grant.expires_at = past
        return JSONResponse({"expired": True})

    async def control_requests(request: Request) -> Response:
        """Token-endpoint and API requests, oldest first."""
        return JSONResponse(state.requests)

    async def control_authorize_requests(request: Request) -> Response:
        """The query parameters of every accepted /login/oauth/authorize request."""
        return JSONResponse(state.authorize_requests)

    async def control_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    return Starlette(
        routes=[
            Route("/_control/user", control_user, methods=["POST"]),
            Route("/_control/token_mode", control_token_mode, methods=["POST"]),
            Route("/_control/misbehave", control_misbehave, methods=["POST"]),
            Route("/_control/expire_tokens", control_expire_tokens, methods=["POST"]),
            Route("/_control/requests", control_requests, methods=["GET"]),
            Route("/_control/authorize_requests", control_authorize_requests, methods=["GET"]),
            Route("/_control/reset", control_reset, methods=["POST"]),
            Route("/login/oauth/authorize", authorize, methods=["GET"]),
            Route("/login/oauth/access_token", access_token, methods=["POST"]),
            Route("/api/v3/user", api_user, methods=["GET"]),
            Route("/api/v3/user/emails", api_emails, methods=["GET"]),
            Route("/api/v3/user/orgs", api_orgs, methods=["GET"]),
            Route("/api/v3/user/teams", api_teams, methods=["GET"]),
            Route("/api/v3/meta", api_meta, methods=["GET"]),
            Route("/api/v3/applications/{client_id}/token", delete_token, methods=["DELETE"]),
            Route("/api/v3/applications/{client_id}/grant", delete_grant, methods=["DELETE"]),
            Route("/avatars/u/{user_id:int}", avatar, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in with uvicorn until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--base-url", help="web origin (default: http://127.0.0.1:{port})")
    parser.add_argument("--client-id", default="broker")
    parser.add_argument("--client-secret", default="broker-secret")
    args = parser.parse_args(argv)
    app = create_app(
        args.base_url or f"http://127.0.0.1:{args.port}",
        client_id=args.client_id,
        client_secret=args.client_secret,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
