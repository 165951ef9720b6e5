"""The dashboard's routes under ``/admin`` (the JSON API keeps ``/admin/oauth2/*``).

Built once with the app: the template set, and the startup check that no configured client
takes the built-in client's id. Pages are GET; everything that changes something is a POST
form (``guard.admin_form``).
"""

from __future__ import annotations

import functools

from shared.settings import Settings

from broker.admin.dashboard import audit, overview, signin, tokens, users
from broker.admin.dashboard.guard import admin_form, admin_page
from broker.admin.dashboard.rendering import Pages
from broker.http.request_observer import ObservedRoute as Route
from broker.oauth.dashboard_client import check_reserved_id


def dashboard_routes(settings: Settings) -> list[Route]:
    check_reserved_id(settings)
    pages = Pages(settings)
    page = functools.partial(admin_page, pages)
    form = functools.partial(admin_form, pages)
    return [
        Route("/admin", page(overview.overview), methods=["GET"]),
        Route("/admin/login", signin.login, methods=["GET"]),
        Route("/admin/callback", signin.make_callback(pages), methods=["GET"]),
        # Also for someone no longer an admin: ending one's own session needs no role.
        Route("/admin/logout", form(signin.logout, admins_only=False), methods=["POST"]),
        Route("/admin/users", page(users.users_page), methods=["GET"]),
        Route("/admin/users/{user_id}", page(users.user_page), methods=["GET"]),
        Route("/admin/users/{user_id}/status", form(users.set_status), methods=["POST"]),
        Route("/admin/tokens", page(tokens.tokens_page), methods=["GET"]),
        Route("/admin/tokens/{token_id}/revoke", form(tokens.revoke), methods=["POST"]),
        Route("/admin/audit", page(audit.audit_page), methods=["GET"]),
        Route("/admin/audit/export", page(audit.export), methods=["GET"]),
    ]
