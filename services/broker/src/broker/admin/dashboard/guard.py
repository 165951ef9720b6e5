"""Who may see a dashboard page or post a dashboard form, checked on every request.

A page needs the dashboard cookie (``session``) naming a live broker session whose user is
active (``broker.oauth.callers.live_session_user``) and an admin
(``broker.oauth.roles.is_admin_user``): without a live session the browser is sent to
``/admin/login``; a signed-in non-admin gets a 403 page and nothing else. The role is read
again on each request, so removing an admin, disabling the user or revoking the session takes
effect at once.

A form (every change is a POST) also needs, before anything is read from it or changed:
``Sec-Fetch-Site`` and ``Origin``, when the browser sends them, saying this origin; and a CSRF
token (``broker.http.csrf``) bound to the dashboard session. Anything missing or wrong is a 403
page and nothing changes.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog
from shared.runtime import Runtime
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.admin.dashboard.rendering import Pages
from broker.admin.dashboard.session import session_reference
from broker.http.context import runtime_of
from broker.http.csrf import csrf_matches, csrf_token
from broker.http.errors import InvalidRequest
from broker.http.forms import form_params
from broker.oauth.callers import live_session_user
from broker.oauth.roles import is_admin_user

log = structlog.get_logger("broker.dashboard")
CSRF_PURPOSE = "admin-dashboard-csrf"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Admin:
    """The signed-in admin: their dashboard's broker session and their ``users`` row."""

    session_id: uuid.UUID
    user: Mapping[str, Any]

    @property
    def user_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.user["id"]))


@dataclass(frozen=True)
class View:
    """What a page handler works with: the runtime, the admin, and how to answer."""

    runtime: Runtime
    admin: Admin
    pages: Pages

    @property
    def csrf(self) -> str:
        return csrf_token(self.runtime.settings.keyring, CSRF_PURPOSE, str(self.admin.session_id))

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> Response:
        return self.pages.render(
            template,
            {"admin": self.admin.user, "csrf": self.csrf, **context},
            status_code=status_code,
        )

    def message(self, title: str, text: str, *, status_code: int) -> Response:
        return self.pages.message(
            title, text, status_code=status_code, admin=self.admin.user, csrf=self.csrf
        )

    def redirect(self, path: str, **query: str | None) -> Response:
        """303 to a dashboard page (``path`` is ours, never taken from the request)."""
        kept = {name: value for name, value in query.items() if value}
        suffix = f"?{urlencode(kept)}" if kept else ""
        return RedirectResponse(
            f"{self.runtime.settings.issuer}/admin{path}{suffix}", status_code=303
        )


PageHandler = Callable[[Request, View], Awaitable[Response]]
FormHandler = Callable[[Request, View, Mapping[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def signed_in(request: Request, runtime: Runtime) -> Admin | None:
    """The live broker session of this browser's dashboard cookie (admin or not), if any."""
    session_id = session_reference(request, runtime)
    if session_id is None:
        return None
    user = await live_session_user(runtime, session_id)
    return Admin(session_id=session_id, user=user) if user is not None else None


async def is_admin(runtime: Runtime, user_id: uuid.UUID) -> bool:
    async with runtime.engine.connect() as connection:
        return await is_admin_user(connection, runtime.settings, user_id)


def refused_not_admin(pages: Pages) -> Response:
    return pages.forbidden("Your account is not an admin of this broker.")


def admin_page(pages: Pages, handler: PageHandler) -> Endpoint:
    """A GET page for admins; others are sent to sign in, or refused."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        runtime = runtime_of(request)
        admin = await signed_in(request, runtime)
        if admin is None:
            return RedirectResponse(f"{runtime.settings.issuer}/admin/login", status_code=303)
        if not await is_admin(runtime, admin.user_id):
            return refused_not_admin(pages)
        return await handler(request, View(runtime=runtime, admin=admin, pages=pages))

    return endpoint


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, issuer: str) -> bool:
    """Fetch metadata and ``Origin`` (when sent) say the form came from our own pages.

    ``Origin: null`` says nothing either way: the pages' ``Referrer-Policy: no-referrer`` makes
    browsers send it for their own same-origin forms (Fetch §3.2.5), so ``Sec-Fetch-Site`` and
    the CSRF token decide those.
    """
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and origin.lower() != _origin(issuer):
        return False
    fetch_site = request.headers.get("sec-fetch-site")
    return fetch_site is None or fetch_site == "same-origin"


def admin_form(pages: Pages, handler: FormHandler, *, admins_only: bool = True) -> Endpoint:
    """A POST for admins: same origin, signed in, CSRF token right, admin (unless
    ``admins_only`` is off: signing out) — else a 403 page."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        runtime = runtime_of(request)
        if not same_origin(request, runtime.settings.issuer):
            log.info("admin_dashboard.form_refused", reason="cross_origin")
            return pages.forbidden("This form was not sent from the dashboard.")
        admin = await signed_in(request, runtime)
        if admin is None:
            log.info("admin_dashboard.form_refused", reason="signed_out")
            return pages.forbidden("Your dashboard session has ended. Sign in again.")
        try:
            form = await form_params(request)
        except InvalidRequest:
            form = {}
        if not csrf_matches(
            runtime.settings.keyring, CSRF_PURPOSE, str(admin.session_id), form.get(CSRF_FIELD, "")
        ):
            log.info("admin_dashboard.form_refused", reason="csrf")
            return pages.forbidden("This form has expired or was not sent from the dashboard.")
        if admins_only and not await is_admin(runtime, admin.user_id):
            return refused_not_admin(pages)
        return await handler(request, View(runtime=runtime, admin=admin, pages=pages), form)

    return endpoint
