"""A stand-in for github.com and the GitHub REST API, both on one port.

It is addressed the way a GitHub Enterprise Server is: the web flow at
``http://127.0.0.1:PORT/login/oauth/...``, the REST API at ``http://127.0.0.1:PORT/api/v3``. It
speaks GitHub's own dialect of OAuth 2.0, not OpenID Connect:

* ``GET /login/oauth/authorize`` auto-approves (no UI) and redirects back with ``code`` and
  ``state`` only (no ``iss``); PKCE ``S256`` is optional, but a code issued for a
  ``code_challenge`` is only redeemable with the matching ``code_verifier``. An unknown
  ``client_id`` gets a 404 page, as on GitHub.
* ``POST /login/oauth/access_token`` answers form-encoded unless the request says ``Accept:
  application/json``, and reports errors (``bad_verification_code``,
  ``incorrect_client_credentials``, ``redirect_uri_mismatch``, ``bad_refresh_token``) with HTTP
  **200** and an ``error`` field. Two token modes: *expiring* (a GitHub App, the default) issues
  an 8-hour ``ghu_`` token with a 6-month ``ghr_`` refresh token that rotates (using it kills it
  and the access token issued with it); *non-expiring* (a classic OAuth App) a ``gho_`` token
  that never expires, with the comma-separated ``scope`` GitHub reports.
* The REST API: ``/user``, ``/user/emails``, ``/user/orgs``, ``/user/teams`` (paginated with
  ``per_page``/``page`` and a ``Link`` header), ``/meta`` (no authentication, a health probe),
  and ``DELETE /applications/{client_id}/token`` and ``.../grant`` (HTTP Basic as the app) to
  revoke. Tokens go in ``Authorization: Bearer X`` or ``token X``; a bad one gets 401
  ``{"message": "Bad credentials", ...}``.

The control API is the kit's (:mod:`standins.kit.control`): ``/_control/user`` takes an account
(``id``, ``login``, ``name``, ``avatar_url``, ``email``, ``emails``, ``orgs``, ``teams``), kept
by its ``id``; ``/_control/users/{id}`` changes one upstream; ``/_control/requests`` lists the
token-endpoint and API requests, ``/_control/authorize_requests`` the query of every accepted
authorization. Misbehaviours: ``token_error_500`` and ``deny`` (one-shot), ``emails_403`` and
``meta_503`` (until reset). Its own routes: ``POST /_control/token_mode`` ``{"mode": "expiring" |
"non_expiring"}`` and ``POST /_control/expire_tokens`` (every expiring access token now;
``{"refresh_tokens": true}``: those too).

Run it from the repository root with ``python -m standins.github --port 9200``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from standins.kit import pkce
from standins.kit.bodies import (
    authorization_scheme,
    basic_credentials,
    form_fields,
    form_value,
    json_object,
    presented_client,
    same_secret,
)
from standins.kit.control import ControlAPI, Controls, Misbehaviours, ProfileChanges, logged
from standins.kit.faults import Abandoned, OutageMiddleware, RefreshAttempt, answered, scripted
from standins.kit.images import TINY_PNG
from standins.kit.redirects import is_http_url, redirect
from standins.kit.runner import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, run

CODE_LIFETIME = 600
"""Seconds an authorization code stays redeemable (GitHub: 10 minutes)."""

EXPIRING_TOKEN_LIFETIME = 28800
"""``expires_in`` of a GitHub App user access token (8 hours)."""

REFRESH_TOKEN_LIFETIME = 15897600
"""``refresh_token_expires_in`` of a GitHub App refresh token (6 months)."""

TOKEN_MODES = frozenset({"expiring", "non_expiring"})
"""Modes accepted by ``POST /_control/token_mode``."""

ONE_SHOT_MODES = frozenset({"token_error_500", "deny"})
STICKY_MODES = frozenset({"emails_403", "meta_503"})

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


def _account_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a ``/_control/user`` body, or None."""
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


@dataclass
class _AuthorizationCode:
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    scope: str
    user_id: int
    expires_at: float


@dataclass
class _AccessToken:
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
    """Everything a reset forgets; ``controls`` is the kit's part."""

    controls: Controls = field(
        default_factory=lambda: Controls(
            Misbehaviours(ONE_SHOT_MODES, STICKY_MODES), ProfileChanges("id")
        )
    )
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    current_user: int = 0
    token_mode: str = "expiring"
    codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.controls.clear()
        user = default_user()
        self.users = {user["id"]: user}
        self.current_user = user["id"]
        self.token_mode = "expiring"
        self.codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    def user(self, user_id: int) -> dict[str, Any]:
        """An account as it is now, with the changes made upstream since it was set."""
        return self.controls.profiles.apply(str(user_id), self.users[user_id])


def _token(prefix: str, length: int) -> str:
    """A GitHub-style token: a type prefix and base62 characters (``ghu_…``)."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


def _node_id(kind: str, number: int) -> str:
    """A legacy GraphQL node id, e.g. ``MDQ6VXNlcjU4MzIzMQ==`` for user 583231."""
    return base64.b64encode(f"{len(kind):02d}:{kind}{number}".encode()).decode("ascii")


def _stable_id(name: str) -> int:
    """A stable positive integer id for an organization or team name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "big") + 1000


def _github_scopes(raw: str) -> list[str]:
    """The requested scopes (GitHub accepts spaces or commas between them), deduplicated."""
    return list(dict.fromkeys(raw.replace(",", " ").split()))


def _api_error(status: int, message: str, documentation: str = f"{DOCS}/rest") -> JSONResponse:
    """A REST API error body as GitHub sends it."""
    return JSONResponse(
        {"message": message, "documentation_url": documentation, "status": str(status)},
        status_code=status,
    )


def _token_reply(request: Request, body: dict[str, Any]) -> Response:
    """JSON if the client asked for it, else form-encoded — always HTTP 200, like GitHub."""
    if "application/json" in request.headers.get("accept", "").lower():
        return JSONResponse(body, headers=_TOKEN_HEADERS)
    return Response(
        urlencode({name: "" if value is None else str(value) for name, value in body.items()}),
        media_type="application/x-www-form-urlencoded; charset=utf-8",
        headers=_TOKEN_HEADERS,
    )


def _token_error(request: Request, error: str) -> Response:
    description, uri = _TOKEN_ERRORS[error]
    return _token_reply(
        request, {"error": error, "error_description": description, "error_uri": uri}
    )


class _TokenErrors:
    """How github.com words a scripted token fault; a dead code or refresh token is an HTTP 200
    with an ``error`` (:class:`standins.kit.faults.FaultDialect`)."""

    def __init__(self, request: Request, error: str, drop: Callable[[], object]) -> None:
        self._request, self._error, self._drop = request, error, drop

    def unavailable(self) -> Response:
        return HTMLResponse("<h1>Service unavailable</h1>", status_code=503)

    def rate_limited(self, retry_after: str) -> Response:
        return HTMLResponse(
            "<h1>Too many requests</h1>", status_code=429, headers={"Retry-After": retry_after}
        )

    def invalid_grant(self) -> Response:
        self._drop()
        return _token_error(self._request, self._error)


class _Documents:
    """The JSON GitHub answers for users, organizations and teams (URLs on this stand-in)."""

    def __init__(self, base: str) -> None:
        self.base, self.api = base, f"{base}/api/v3"

    def org(self, login: str) -> dict[str, Any]:
        org_id, api = _stable_id(f"org:{login}"), self.api
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
            "avatar_url": f"{self.base}/avatars/u/{org_id}?v=4",
            "description": None,
        }

    def team(self, team: dict[str, Any]) -> dict[str, Any]:
        org, slug = team["org"], team["slug"]
        team_id = _stable_id(f"team:{org}/{slug}")
        return {
            "id": team_id,
            "node_id": _node_id("Team", team_id),
            "url": f"{self.api}/teams/{team_id}",
            "html_url": f"{self.base}/orgs/{org}/teams/{slug}",
            "name": team.get("name") or slug.replace("-", " ").title(),
            "slug": slug,
            "description": None,
            "privacy": "closed",
            "notification_setting": "notifications_enabled",
            "permission": "pull",
            "members_url": f"{self.api}/teams/{team_id}/members{{/member}}",
            "repositories_url": f"{self.api}/teams/{team_id}/repos",
            "parent": None,
            "organization": self.org(org),
        }

    def user(self, user: dict[str, Any]) -> dict[str, Any]:
        login, user_id = user["login"], user["id"]
        users = f"{self.api}/users/{login}"
        return {
            "login": login,
            "id": user_id,
            "node_id": _node_id("User", user_id),
            "avatar_url": user.get("avatar_url") or f"{self.base}/avatars/u/{user_id}?v=4",
            "gravatar_id": "",
            "url": users,
            "html_url": f"{self.base}/{login}",
            "followers_url": f"{users}/followers",
            "following_url": f"{users}/following{{/other_user}}",
            "gists_url": f"{users}/gists{{/gist_id}}",
            "starred_url": f"{users}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{users}/subscriptions",
            "organizations_url": f"{users}/orgs",
            "repos_url": f"{users}/repos",
            "events_url": f"{users}/events{{/privacy}}",
            "received_events_url": f"{users}/received_events",
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


class GitHub:
    """The web flow, the REST API and the stand-in's own control routes over one state."""

    def __init__(self, base_url: str, *, client_id: str, client_secret: str) -> None:
        self.base = base_url.rstrip("/")
        self.api = f"{self.base}/api/v3"
        self.client_id, self.client_secret = client_id, client_secret
        self.state = _State()
        self.documents = _Documents(self.base)

    # ------------------------------------------------------------------ the web flow

    async def authorize(self, request: Request) -> Response:
        """Auto-approve an authorization request and redirect back with a code."""
        state, query = self.state, request.query_params
        if query.get("client_id") != self.client_id:
            return HTMLResponse("<h1>404</h1><p>Not Found</p>", status_code=404)
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not is_http_url(redirect_uri):
            # GitHub would fall back to the registered callback URL; this stand-in has none.
            return HTMLResponse(
                "<h1>Bad request</h1><p>redirect_uri is required</p>", status_code=400
            )
        state.controls.authorize_requests.append(dict(query))
        echoed = {"state": query["state"]} if "state" in query else {}

        def fail(error: str, description: str, anchor: str) -> Response:
            uri = f"{_AUTHORIZE_ERRORS_DOC}#{anchor}"
            params = {"error": error, "error_description": description, "error_uri": uri}
            return redirect(redirect_uri, {**params, **echoed})

        code_challenge = query.get("code_challenge")
        if code_challenge is not None and query.get("code_challenge_method", "S256") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256.", "pkce")
        if state.controls.misbehaviours.take("deny"):
            return fail(
                "access_denied", "The user has denied your application access.", "access-denied"
            )
        now = time.time()
        for stale in [code for code, grant in state.codes.items() if grant.expires_at <= now]:
            del state.codes[stale]
        code = "".join(secrets.choice("0123456789abcdef") for _ in range(20))
        state.codes[code] = _AuthorizationCode(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            scope=query.get("scope", ""),
            user_id=state.current_user,
            expires_at=now + CODE_LIFETIME,
        )
        return redirect(redirect_uri, {"code": code, **echoed})

    def _client_authenticated(self, request: Request, form: FormData) -> bool:
        """The app's credentials, posted in the form or sent with HTTP Basic."""
        presented = presented_client(request, form)
        client_id, secret = presented.posted_id, presented.posted_secret
        if presented.basic is not None:
            if presented.basic_malformed:
                return False
            client_id, secret = presented.basic
            if presented.posted_id is not None and presented.posted_id != client_id:
                return False
        if client_id is None or secret is None:
            return False
        return same_secret(client_id, self.client_id) and same_secret(secret, self.client_secret)

    def _issue(self, request: Request, *, user_id: int, scope: str, expiring: bool) -> Response:
        """Mint a token (pair) in the current mode and answer the token request."""
        state, now = self.state, time.time()
        if not expiring:
            access = _token("gho_", 36)
            granted = ",".join(_github_scopes(scope))
            state.access_tokens[access] = _AccessToken(self.client_id, user_id, granted, None)
            return _token_reply(
                request, {"access_token": access, "scope": granted, "token_type": "bearer"}
            )
        access, refresh = _token("ghu_", 36), _token("ghr_", 76)
        state.access_tokens[access] = _AccessToken(
            self.client_id, user_id, "", now + EXPIRING_TOKEN_LIFETIME
        )
        state.refresh_tokens[refresh] = _RefreshToken(
            self.client_id, user_id, scope, access, now + REFRESH_TOKEN_LIFETIME
        )
        return _token_reply(
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

    async def access_token(self, request: Request) -> Response:
        """Redeem a code or a refresh token (``POST /login/oauth/access_token``)."""
        form = await request.form()
        self.state.controls.requests.append(
            logged(
                request,
                kind="token",
                form=form_fields(form),
                accept=request.headers.get("accept"),
                authorization=authorization_scheme(request),
            )
        )
        grant_type = form_value(form, "grant_type") or "authorization_code"
        attempt = None
        if grant_type == "refresh_token":
            attempt = self.state.controls.refresh_log.arrive(form_value(form, "refresh_token"))
        return answered(await self._token_answer(request, form, grant_type, attempt), attempt)

    async def _token_answer(
        self, request: Request, form: FormData, grant_type: str, attempt: RefreshAttempt | None
    ) -> Response | Abandoned:
        if self.state.controls.misbehaviours.take("token_error_500"):
            return HTMLResponse("<h1>Internal server error</h1>", status_code=500)
        if not self._client_authenticated(request, form):
            return _token_error(request, "incorrect_client_credentials")
        if attempt is not None:
            return await self._refresh(request, form, attempt)
        if grant_type != "authorization_code":
            return _token_error(request, "unsupported_grant_type")
        return await self._redeem(request, form)

    async def _redeem(self, request: Request, form: FormData) -> Response | Abandoned:
        state, code = self.state, form_value(form, "code")
        errors = _TokenErrors(
            request, "bad_verification_code", lambda: state.codes.pop(code or "", None)
        )
        failed = await scripted(state.controls.code_faults, request, errors)
        if failed is not None:
            return failed
        grant = state.codes.pop(code, None) if code else None
        if grant is None or grant.expires_at <= time.time() or grant.client_id != self.client_id:
            return _token_error(request, "bad_verification_code")
        if form_value(form, "redirect_uri") != grant.redirect_uri:
            return _token_error(request, "redirect_uri_mismatch")
        if grant.code_challenge is not None and not pkce.verifier_matches(
            form_value(form, "code_verifier"), grant.code_challenge
        ):
            return _token_error(request, "bad_verification_code")
        expiring = state.token_mode == "expiring"
        return self._issue(request, user_id=grant.user_id, scope=grant.scope, expiring=expiring)

    async def _refresh(
        self, request: Request, form: FormData, attempt: RefreshAttempt
    ) -> Response | Abandoned:
        """``grant_type=refresh_token``: the refresh token and its access token die."""
        state, presented = self.state, form_value(form, "refresh_token")
        errors = _TokenErrors(
            request, "bad_refresh_token", lambda: state.refresh_tokens.pop(presented or "", None)
        )
        failed = await scripted(state.controls.refresh_faults, request, errors, attempt)
        if failed is not None:
            return failed
        grant = state.refresh_tokens.pop(presented, None) if presented else None
        if grant is None or grant.expires_at <= time.time() or grant.client_id != self.client_id:
            return _token_error(request, "bad_refresh_token")
        state.access_tokens.pop(grant.access_token, None)
        return self._issue(request, user_id=grant.user_id, scope=grant.scope, expiring=True)

    # ------------------------------------------------------------------ the REST API

    def _record_api(self, request: Request) -> None:
        self.state.controls.requests.append(
            logged(
                request,
                kind="api",
                query=request.url.query,
                accept=request.headers.get("accept"),
                authorization=authorization_scheme(request),
            )
        )

    def _authenticated(self, request: Request, documentation: str) -> _AccessToken | Response:
        """The access token the request carries, or the 401 GitHub answers."""
        self._record_api(request)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in {"bearer", "token"} or not value.strip():
            return _api_error(401, "Requires authentication", documentation)
        grant = self.state.access_tokens.get(value.strip())
        if grant is None or (grant.expires_at is not None and grant.expires_at <= time.time()):
            return _api_error(401, "Bad credentials")
        return grant

    def _paged(
        self, request: Request, items: list[dict[str, Any]], grant: _AccessToken
    ) -> Response:
        """One page of ``items`` with GitHub's ``Link`` header."""
        try:
            per_page = int(request.query_params.get("per_page", _DEFAULT_PER_PAGE))
            page = max(int(request.query_params.get("page", 1)), 1)
        except ValueError:
            per_page, page = _DEFAULT_PER_PAGE, 1
        per_page = min(max(per_page, 1), _MAX_PER_PAGE)
        last = max((len(items) + per_page - 1) // per_page, 1)

        def page_url(number: int) -> str:
            query = {**request.query_params, "per_page": str(per_page), "page": str(number)}
            return f"{self.api}{request.url.path.removeprefix('/api/v3')}?{urlencode(query)}"

        links = []
        if page < last:
            links += [f'<{page_url(page + 1)}>; rel="next"', f'<{page_url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{page_url(1)}>; rel="first"', f'<{page_url(page - 1)}>; rel="prev"']
        headers = _api_headers(grant) | ({"Link": ", ".join(links)} if links else {})
        return JSONResponse(items[(page - 1) * per_page : page * per_page], headers=headers)

    async def api_user(self, request: Request) -> Response:
        grant = self._authenticated(request, f"{DOCS}/rest/users/users#get-the-authenticated-user")
        if isinstance(grant, Response):
            return grant
        user = self.documents.user(self.state.user(grant.user_id))
        return JSONResponse(user, headers=_api_headers(grant))

    async def api_emails(self, request: Request) -> Response:
        documentation = f"{DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user"
        grant = self._authenticated(request, documentation)
        if isinstance(grant, Response):
            return grant
        if self.state.controls.misbehaviours.is_on("emails_403"):
            return _api_error(403, "Resource not accessible by integration", documentation)
        emails = [
            {
                "email": entry["email"],
                "primary": bool(entry.get("primary", False)),
                "verified": bool(entry.get("verified", False)),
                "visibility": entry.get("visibility"),
            }
            for entry in self.state.user(grant.user_id).get("emails", [])
        ]
        return self._paged(request, emails, grant)

    async def api_orgs(self, request: Request) -> Response:
        grant = self._authenticated(
            request, f"{DOCS}/rest/orgs/orgs#list-organizations-for-the-authenticated-user"
        )
        if isinstance(grant, Response):
            return grant
        logins = self.state.user(grant.user_id).get("orgs", [])
        return self._paged(request, [self.documents.org(login) for login in logins], grant)

    async def api_teams(self, request: Request) -> Response:
        grant = self._authenticated(
            request, f"{DOCS}/rest/teams/teams#list-teams-for-the-authenticated-user"
        )
        if isinstance(grant, Response):
            return grant
        teams = self.state.user(grant.user_id).get("teams", [])
        return self._paged(request, [self.documents.team(team) for team in teams], grant)

    async def api_meta(self, request: Request) -> Response:
        self._record_api(request)
        if self.state.controls.misbehaviours.is_on("meta_503"):
            return _api_error(503, "Service Unavailable")
        return JSONResponse(
            {"verifiable_password_authentication": True, "installed_version": "3.15.0"}
        )

    # ------------------------------------------------------------------ revocation

    async def _revocation(self, request: Request, documentation: str) -> str | Response:
        """The ``access_token`` of a revocation request by the app, or GitHub's error for it."""
        self._record_api(request)
        if request.path_params["client_id"] != self.client_id:
            return _api_error(404, "Not Found")
        basic = basic_credentials(request)
        if basic is None or not (
            same_secret(basic[0][0], self.client_id)
            and same_secret(basic[0][1], self.client_secret)
        ):
            return _api_error(401, "Bad credentials")
        body = await json_object(request)
        presented = body.get("access_token") if body else None
        if not isinstance(presented, str) or not presented:
            return _api_error(
                422, 'Invalid request.\n\n"access_token" wasn\'t supplied.', documentation
            )
        grant = self.state.access_tokens.get(presented)
        if grant is None or grant.client_id != self.client_id:
            return _api_error(404, "Not Found", documentation)
        return presented

    async def delete_token(self, request: Request) -> Response:
        """``DELETE /applications/{client_id}/token``: that access token stops working."""
        presented = await self._revocation(
            request, f"{DOCS}/rest/apps/oauth-applications#delete-an-app-token"
        )
        if isinstance(presented, Response):
            return presented
        del self.state.access_tokens[presented]
        return Response(status_code=204)

    async def delete_grant(self, request: Request) -> Response:
        """``DELETE /applications/{client_id}/grant``: every token of that user for the app dies."""
        presented = await self._revocation(
            request, f"{DOCS}/rest/apps/oauth-applications#delete-an-app-authorization"
        )
        if isinstance(presented, Response):
            return presented
        state = self.state
        user_id = state.access_tokens[presented].user_id
        for name in [
            name for name, token in state.access_tokens.items() if token.user_id == user_id
        ]:
            del state.access_tokens[name]
        for name in [
            name for name, grant in state.refresh_tokens.items() if grant.user_id == user_id
        ]:
            del state.refresh_tokens[name]
        return Response(status_code=204)

    async def avatar(self, request: Request) -> Response:
        """Every account's avatar: a tiny PNG (GitHub Enterprise serves them at /avatars/u/)."""
        return Response(TINY_PNG, media_type="image/png")

    # ------------------------------------------------------------------ control

    def set_user(self, body: dict[str, Any] | None) -> dict[str, Any] | str:
        """The account the next authorizations are issued for (kept by its ``id``)."""
        problem = "body must be a JSON object" if body is None else _account_problem(body)
        if body is None or problem is not None:
            return problem or "body must be a JSON object"
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
        self.state.users[user["id"]] = user
        self.state.current_user = user["id"]
        return user

    async def control_token_mode(self, request: Request) -> Response:
        body = await json_object(request)
        mode = body.get("mode") if body else None
        if mode not in TOKEN_MODES:
            return JSONResponse({"error": f"mode must be one of {sorted(TOKEN_MODES)}"}, 400)
        self.state.token_mode = mode
        return JSONResponse({"mode": mode})

    async def control_expire_tokens(self, request: Request) -> Response:
        """Expire every expiring access token now; ``{"refresh_tokens": true}``: those too."""
        body = await json_object(request) or {}
        past = time.time() - 1
        for grant in self.state.access_tokens.values():
            if grant.expires_at is not None:
                grant.expires_at = past
        if body.get("refresh_tokens") is True:
            for refresh_grant in self.state.refresh_tokens.values():
                refresh_grant.expires_at = past
        return JSONResponse({"expired": True})

    # ------------------------------------------------------------------ the app

    def app(self) -> Starlette:
        control = ControlAPI(self.state.controls, reset=self.state.reset, set_user=self.set_user)
        applications = "/api/v3/applications/{client_id}"
        outage = Middleware(
            OutageMiddleware,
            outage=self.state.controls.outage,
            scripted=lambda path: path == "/login/oauth/access_token",
        )
        return Starlette(
            middleware=[outage],
            routes=[
                *control.routes(
                    Route("/_control/token_mode", self.control_token_mode, methods=["POST"]),
                    Route("/_control/expire_tokens", self.control_expire_tokens, methods=["POST"]),
                ),
                Route("/login/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/api/v3/user", self.api_user, methods=["GET"]),
                Route("/api/v3/user/emails", self.api_emails, methods=["GET"]),
                Route("/api/v3/user/orgs", self.api_orgs, methods=["GET"]),
                Route("/api/v3/user/teams", self.api_teams, methods=["GET"]),
                Route("/api/v3/meta", self.api_meta, methods=["GET"]),
                Route(f"{applications}/token", self.delete_token, methods=["DELETE"]),
                Route(f"{applications}/grant", self.delete_grant, methods=["DELETE"]),
                Route("/avatars/u/{user_id:int}", self.avatar, methods=["GET"]),
            ],
        )


def _api_headers(grant: _AccessToken) -> dict[str, str]:
    """What GitHub sends with every API answer; classic OAuth App tokens report their scopes."""
    return {
        "X-GitHub-Media-Type": "github.v3; format=json",
        "X-GitHub-Api-Version-Selected": "2022-11-28",
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "4999",
        "X-RateLimit-Reset": str(int(time.time()) + 3600),
        "X-RateLimit-Used": "1",
        "X-RateLimit-Resource": "core",
        "X-OAuth-Scopes": ", ".join(grant.scope.split(",")) if grant.scope else "",
    }


def create_app(
    base_url: str,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
) -> Starlette:
    """The stand-in as a Starlette app; ``base_url`` is the web origin, the API
    ``{base_url}/api/v3``. GitHub knows one OAuth client (``client_id``/``client_secret``)."""
    return GitHub(base_url, client_id=client_id, client_secret=client_secret).app()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="web origin (default: http://127.0.0.1:{port})")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in until interrupted."""
    run(
        argv,
        description=__doc__,
        default_port=9200,
        add_arguments=_arguments,
        build=lambda args, default_url: create_app(
            args.base_url or default_url,
            client_id=args.client_id,
            client_secret=args.client_secret,
        ),
    )


if __name__ == "__main__":
    main()
