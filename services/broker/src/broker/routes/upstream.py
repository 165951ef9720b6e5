"""``/auth/oauth2/{provider}/callback`` (its flow: ``broker.login.callback``) and the dev form."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

import structlog
from shared.provider_states import is_switched_off
from shared.providers.dev import DevProvider
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import InvalidRequest
from broker.http.forms import single_params
from broker.http.pages import dev_login_page, error_page, redirect_sources
from broker.login.callback import finish_callback
from broker.login.logins import consume_login, cookie_name
from broker.login.refusals import back_to_client, provider_disabled

log = structlog.get_logger("broker.upstream")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


async def callback(request: Request) -> Response:
    runtime = runtime_of(request)
    provider_id = request.path_params["provider"]
    provider = runtime.providers.get(provider_id)
    try:
        params = single_params(list(request.query_params.multi_items()))
    except InvalidRequest:
        return error_page("Sign-in failed", "The sign-in response is malformed.")
    state = params.get("state")
    if provider is None or not state:
        return error_page("Sign-in failed", "This sign-in link is not valid.")
    login_cookie = request.cookies.get(cookie_name(runtime))
    pending = await consume_login(runtime, provider_id, state, login_cookie)
    if pending is None or login_cookie is None:
        # Unknown, used, expired, another browser's or another provider's state: stop here,
        # before any token request reaches the upstream (docs/security.md "Upstream state and mix-up
        # defence").
        log.info("login.state_rejected", provider=provider_id)
        return error_page(
            "Sign-in failed",
            "This sign-in attempt has expired or was started in another browser. "
            "Return to the application and sign in again.",
        )
    structlog.contextvars.bind_contextvars(client_id=pending.request.client_id)
    async with runtime.engine.connect() as connection:
        disabled = await is_switched_off(connection, provider_id)
    if disabled:
        # Disabled while the browser was upstream: its answer is not even read (no code
        # exchange, no ID token), the state is spent (docs/security.md "Switching a provider
        # off").
        log.info("login.provider_disabled", provider=provider_id)
        return back_to_client(request, pending, provider_disabled(provider_id))
    return await finish_callback(request, provider, pending, params, login_cookie)


def _dev_provider(request: Request) -> DevProvider | None:
    provider = runtime_of(request).providers.get(request.path_params["provider"])
    return provider if isinstance(provider, DevProvider) else None


async def dev_login_form(request: Request) -> Response:
    provider = _dev_provider(request)
    state = request.query_params.get("state")
    if provider is None or not state:
        return error_page("Not found", "There is no development login here.", 404)
    settings = runtime_of(request).settings
    # The form's answer redirects to the client that started the sign-in: any registered one.
    targets = redirect_sources(uri for client in settings.clients for uri in client.redirect_uris)
    return dev_login_page(provider.form_url, state, provider.display_name, targets)


async def dev_login_submit(request: Request) -> Response:
    provider = _dev_provider(request)
    if provider is None:
        return error_page("Not found", "There is no development login here.", 404)
    body = (await request.body()).decode("utf-8", errors="replace")
    form = dict(parse_qsl(body, keep_blank_values=True))
    state = form.get("state", "")
    email = form.get("email", "").strip()
    name = form.get("name", "").strip()[:200]
    if not state or not _EMAIL.match(email):
        return error_page("Invalid email", "Type an email address such as ada@example.com.")
    code = provider.issue_code(state, email, name)
    target = f"{runtime_of(request).settings.issuer}/auth/oauth2/{provider.id}/callback"
    return RedirectResponse(f"{target}?{urlencode({'code': code, 'state': state})}", 303)
