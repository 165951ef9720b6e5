"""``/auth/oauth2/{provider}/callback`` and the dev provider's form."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl, urlencode

import structlog
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.providers.base import UpstreamLogin
from shared.providers.dev import DevProvider
from shared.providers.errors import (
    ProviderDenied,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker import browser_sessions
from broker.authorization import single_params
from broker.codes import issue_code
from broker.errors import (
    AccessDenied,
    InvalidRequest,
    LoginRequired,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
)
from broker.identity import UnusableIdentity, UserDisabled, record_refused_login, sign_in
from broker.logins import (
    PendingLogin,
    ReauthenticationMissing,
    authentication_time,
    consume_login,
    cookie_name,
    set_login_cookie,
)
from broker.pages import dev_login_page, error_page
from broker.responses import authorization_response, error_response
from broker.routes.context import request_meta, runtime_of

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
    pending = await consume_login(
        runtime, provider_id, state, request.cookies.get(cookie_name(runtime))
    )
    if pending is None:
        # Unknown, used, expired, another browser's or another provider's state: stop here,
        # before any token request reaches the upstream (SECURITY.md 6).
        log.info("login.state_rejected", provider=provider_id)
        return error_page(
            "Sign-in failed",
            "This sign-in attempt has expired or was started in another browser. "
            "Return to the application and sign in again.",
        )
    try:
        login = await provider.complete_login(pending.start, params)
    except ProviderError as exc:
        log.warning("login.upstream_failed", provider=provider_id, reason=str(exc))
        return _back_to_client(runtime.settings.issuer, pending, _client_error(exc))
    meta = request_meta(request)
    try:
        auth_time = authentication_time(pending, login.profile.claims, runtime.clock.now())
    except ReauthenticationMissing as exc:
        log.info("login.reauthentication_missing", provider=provider_id, reason=str(exc))
        return _back_to_client(runtime.settings.issuer, pending, LoginRequired(str(exc)))
    browser = browser_sessions.value_for_sign_in(request, runtime)
    try:
        code = await _finish(request, pending, login, auth_time, browser)
    except UserDisabled as exc:
        async with runtime.engine.begin() as connection:
            await record_refused_login(
                connection,
                provider_id=provider_id,
                subject=login.profile.subject,
                user_id=exc.user_id,
                client_id=pending.client_id,
                ip=meta.ip,
                now=runtime.clock.now(),
            )
        return _back_to_client(
            runtime.settings.issuer, pending, AccessDenied("this account is disabled")
        )
    except UnusableIdentity as exc:
        log.warning("login.identity_unusable", provider=provider_id, reason=str(exc))
        return _back_to_client(
            runtime.settings.issuer, pending, ServerError("the upstream identity is unusable")
        )
    log.info("login.succeeded", provider=provider_id, client_id=pending.client_id, ip=meta.ip)
    response = authorization_response(
        pending.redirect_uri,
        {"code": code, "state": pending.client_state, "iss": runtime.settings.issuer},
        pending.response_mode,
    )
    set_login_cookie(response, runtime, new_opaque_token())  # rotated at login (SECURITY.md 9)
    browser_sessions.set_cookie(response, runtime, browser)
    return response


async def _finish(
    request: Request,
    pending: PendingLogin,
    login: UpstreamLogin,
    auth_time: dt.datetime,
    browser: str,
) -> str:
    """Sign the user in and issue the authorization code, in one transaction."""
    runtime = runtime_of(request)
    meta = request_meta(request)
    provider = runtime.providers[pending.provider]
    for attempt in range(2):
        try:
            now = runtime.clock.now()
            async with runtime.engine.begin() as connection:
                signed_in = await sign_in(
                    connection,
                    provider_id=provider.id,
                    provider_type=provider.type,
                    login=login,
                    keyring=runtime.settings.keyring,
                    now=now,
                    client_id=pending.client_id,
                    ip=meta.ip,
                )
                return await issue_code(
                    connection,
                    ttl=runtime.settings.code_ttl,
                    now=now,
                    client_id=pending.client_id,
                    redirect_uri=pending.redirect_uri,
                    user_id=signed_in.user_id,
                    profile_id=signed_in.profile_id,
                    provider=provider.id,
                    scope=pending.scope,
                    nonce=pending.nonce,
                    code_challenge=pending.code_challenge,
                    code_challenge_method=pending.code_challenge_method,
                    auth_time=auth_time,
                    user_agent=meta.user_agent,
                    ip=meta.ip,
                    browser_hash=token_hash(browser),
                )
        except IntegrityError:
            # Two first logins of one identity raced to create it; the retry finds it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _client_error(exc: ProviderError) -> OAuthError:
    if isinstance(exc, ProviderDenied):
        return AccessDenied("the identity provider denied the sign-in")
    if isinstance(exc, ProviderUnavailable):
        return TemporarilyUnavailable("the identity provider is not reachable")
    if isinstance(exc, ProviderRejected):
        return AccessDenied("the identity provider rejected the sign-in")
    return ServerError("the identity provider's response failed validation")


def _back_to_client(issuer: str, pending: PendingLogin, error: OAuthError) -> Response:
    return error_response(
        issuer, pending.redirect_uri, error, pending.client_state, pending.response_mode
    )


def _dev_provider(request: Request) -> DevProvider | None:
    provider = runtime_of(request).providers.get(request.path_params["provider"])
    return provider if isinstance(provider, DevProvider) else None


async def dev_login_form(request: Request) -> Response:
    provider = _dev_provider(request)
    state = request.query_params.get("state")
    if provider is None or not state:
        return error_page("Not found", "There is no development login here.", 404)
    return dev_login_page(provider.form_url, state, provider.display_name)


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
