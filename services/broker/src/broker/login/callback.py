"""The upstream callback's flow: finish the login upstream, then sign in, link, or ask again.

``broker.routes.upstream.callback`` finds the login in flight (``broker.login.logins``) and hands
it here: the upstream's answer is completed (code exchange, ID token), a Google login without a
refresh token asks for consent once more, and the identity signs in (``broker.login.identity``)
or is linked to the user who started a link flow (``broker.login.linking``), ending in an
authorization code for the client. A refused link audits the refusal and shows the "account
exists" page; any other failure goes back to the client as an OAuth error (RFC 6749 §4.1.2.1),
counted per provider and client.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import structlog
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.jobs.base import JobName, QueueUnavailableError
from shared.jobs.profile_sync import ProfileSyncPayload, avatar_job_id
from shared.profile_columns import UnusableIdentity
from shared.provider_states import is_switched_off
from shared.providers.base import Provider, UpstreamLogin
from shared.providers.errors import ProviderError
from shared.runtime import Runtime
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.http.context import request_meta, runtime_of
from broker.http.errors import AccessDenied, InvalidRequest, LoginRequired, ServerError
from broker.http.metrics import metrics_of
from broker.login import browser_sessions
from broker.login.identity import (
    Context,
    LinkRefused,
    UpstreamIdentity,
    UserDisabled,
    holds_usable_refresh_token,
    link_identity,
    record_refused_login,
    sign_in,
)
from broker.login.linking import confirm_link, link_flow_session_alive
from broker.login.logins import (
    LinkOwner,
    PendingLogin,
    ReauthenticationMissing,
    authentication_time,
    restart_with_consent,
    set_login_cookie,
    start_login,
)
from broker.login.refusals import back_to_client, client_error, provider_disabled, refused
from broker.oauth.codes import issue_code
from broker.oauth.responses import authorization_response

log = structlog.get_logger("broker.upstream")


async def finish_callback(
    request: Request,
    provider: Provider,
    pending: PendingLogin,
    params: Mapping[str, str],
    login_cookie: str,
) -> Response:
    """The upstream answered a login this browser started (``pending``, already consumed):
    complete it upstream, then sign in, link, or ask the upstream for consent again; every
    failure goes back to the client as an OAuth error, counted."""
    runtime = runtime_of(request)
    provider_id = request.path_params["provider"]
    try:
        login = await provider.complete_login(pending.start, params)
    except ProviderError as exc:
        log.warning("login.upstream_failed", provider=provider_id, reason=str(exc))
        return back_to_client(request, pending, client_error(exc))
    meta = request_meta(request)
    try:
        auth_time = authentication_time(pending, login.profile.claims, runtime.clock.now())
    except ReauthenticationMissing as exc:
        log.info("login.reauthentication_missing", provider=provider_id, reason=str(exc))
        return back_to_client(request, pending, LoginRequired(str(exc)))
    if await _needs_consent(runtime, provider, pending, login):
        try:
            again = await restart_with_consent(runtime, provider, pending, login_cookie)
        except ProviderError as exc:
            log.warning("login.upstream_failed", provider=provider_id, reason=str(exc))
            return back_to_client(request, pending, client_error(exc))
        log.info("login.consent_requested", provider=provider_id, reason="offline_grant_missing")
        response: Response = RedirectResponse(again.upstream_url, status_code=302)
        set_login_cookie(response, runtime, login_cookie)
        return response
    identity = UpstreamIdentity(
        provider_id=provider.id,
        provider_type=provider.type,
        login=login,
        link_by_email=_link_by_email(runtime, provider.id),
    )
    browser = browser_sessions.value_for_sign_in(request, runtime)
    try:
        if pending.sign_in_before_link is not None:
            return await _link_after_sign_in(request, pending, identity, login_cookie)
        code = await _finish(request, pending, identity, auth_time, browser)
    except UserDisabled as exc:
        async with runtime.engine.begin() as connection:
            await record_refused_login(
                connection,
                provider_id=provider_id,
                subject=login.profile.subject,
                user_id=exc.user_id,
                client_id=pending.request.client_id,
                ip=meta.ip,
                now=runtime.clock.now(),
            )
        return back_to_client(request, pending, AccessDenied("this account is disabled"))
    except UnusableIdentity as exc:
        log.warning("login.identity_unusable", provider=provider_id, reason=str(exc))
        return back_to_client(request, pending, ServerError("the upstream identity is unusable"))
    except LinkRefused as exc:
        return await refused(request, pending, identity, exc, _context(request, pending))
    except LinkSessionEnded:
        return back_to_client(
            request,
            pending,
            AccessDenied("the session that started linking has ended; sign in again"),
        )
    except SignedInAsSomeoneElse:
        log.info("link.sign_in_mismatch", provider=provider_id)
        return back_to_client(
            request,
            pending,
            AccessDenied("that sign-in is another account than the one being linked to"),
        )
    metrics_of(request).login_finished(provider_id, pending.request.client_id, "success")
    log.info(
        "login.succeeded",
        provider=provider_id,
        client_id=pending.request.client_id,
        ip=meta.ip,
        purpose="link" if pending.link_owner else "login",
    )
    response = authorization_response(
        pending.request.redirect_uri,
        {"code": code, "state": pending.request.state, "iss": runtime.settings.issuer},
        pending.request.response_mode,
    )
    # Rotated at login (docs/security.md "Login cookie").
    set_login_cookie(response, runtime, new_opaque_token())
    browser_sessions.set_cookie(response, runtime, browser)
    return response


def _link_by_email(runtime: Runtime, provider_id: str) -> bool:
    config = runtime.settings.provider(provider_id)
    return bool(config and config.link_by_email)


async def _needs_consent(
    runtime: Runtime, provider: Provider, pending: PendingLogin, login: UpstreamLogin
) -> bool:
    """Google: no refresh token came back, the broker holds none that works for this identity,
    and this login has not asked for consent yet (so it is asked at most once)."""
    if not provider.reprompts_for_refresh_token:
        return False
    if login.tokens is not None and login.tokens.refresh_token:
        return False
    if "consent" in (pending.request.prompt or "").split():
        return False
    async with runtime.engine.connect() as connection:
        held = await holds_usable_refresh_token(
            connection, provider.id, login.profile.subject, runtime.clock.now()
        )
    return not held


def _context(request: Request, pending: PendingLogin) -> Context:
    """Who asked and when, for the identity writes and their audit rows."""
    runtime = runtime_of(request)
    return Context(
        keyring=runtime.settings.keyring,
        issuer=runtime.settings.issuer,
        now=runtime.clock.now(),
        client_id=pending.request.client_id,
        ip=request_meta(request).ip,
    )


class LinkSessionEnded(Exception):
    """The session that started a link flow was revoked (or its user disabled) meanwhile."""


class SignedInAsSomeoneElse(Exception):
    """The sign-in before a link resolved to another user than the one expected."""


async def _link_after_sign_in(
    request: Request, pending: PendingLogin, identity: UpstreamIdentity, login_cookie: str
) -> Response:
    """The fresh sign-in a link flow asked for succeeded: sign the user in (as any sign-in,
    audited) and, if it is the user expected, go on to the provider being linked, bound to
    that user and to this browser (docs/security.md "Linking needs a fresh browser sign-in").
    """
    runtime = runtime_of(request)
    before_link = pending.sign_in_before_link
    assert before_link is not None
    link_provider = runtime.providers.get(before_link.link_provider)
    if link_provider is None:
        return back_to_client(request, pending, InvalidRequest("that provider is gone"))
    async with runtime.engine.connect() as connection:
        if await is_switched_off(connection, link_provider.id):
            return back_to_client(request, pending, provider_disabled(link_provider.id))
    context = _context(request, pending)
    for attempt in range(2):
        try:
            async with runtime.engine.begin() as connection:
                signed_in = await sign_in(connection, identity, context)
                if before_link.user_id is not None and signed_in.user_id != before_link.user_id:
                    raise SignedInAsSomeoneElse()  # rolls the sign-in back: nothing is written
            break
        except IntegrityError:
            # Two first logins of one identity raced to create it; the retry finds it.
            if attempt == 1:
                raise
    owner = LinkOwner(user_id=signed_in.user_id, session_id=None)
    try:
        started = await start_login(
            runtime, link_provider, pending.request, login_cookie, link_owner=owner
        )
    except ProviderError as exc:
        log.warning("login.upstream_failed", provider=link_provider.id, reason=str(exc))
        return back_to_client(request, pending, client_error(exc))
    log.info("link.signed_in_again", provider=identity.provider_id, link_provider=link_provider.id)
    return await confirm_link(runtime, owner, link_provider.display_name, started, pending.request)


async def _finish(
    request: Request,
    pending: PendingLogin,
    identity: UpstreamIdentity,
    auth_time: dt.datetime,
    browser: str,
) -> str:
    """Sign the user in (or link), and issue the authorization code, in one transaction."""
    runtime = runtime_of(request)
    meta = request_meta(request)
    for attempt in range(2):
        try:
            context = _context(request, pending)
            async with runtime.engine.begin() as connection:
                owner = pending.link_owner
                if owner is None:
                    signed_in = await sign_in(connection, identity, context)
                else:
                    if not await link_flow_session_alive(connection, owner):
                        raise LinkSessionEnded()
                    signed_in = await link_identity(
                        connection, identity, context, user_id=owner.user_id
                    )
                code = await issue_code(
                    connection,
                    ttl=runtime.settings.code_ttl,
                    now=context.now,
                    client_id=pending.request.client_id,
                    redirect_uri=pending.request.redirect_uri,
                    user_id=signed_in.user_id,
                    profile_id=signed_in.profile_id,
                    provider=identity.provider_id,
                    scope=pending.request.scope,
                    nonce=pending.request.nonce,
                    code_challenge=pending.request.code_challenge,
                    code_challenge_method=pending.request.code_challenge_method,
                    auth_time=auth_time,
                    user_agent=meta.user_agent,
                    ip=meta.ip,
                    browser_hash=token_hash(browser),
                )
            if signed_in.avatar_pending:
                await _fetch_avatar_soon(runtime, signed_in.profile_id)
            return code
        except IntegrityError:
            # Two first logins of one identity raced to create it; the retry finds it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


async def _fetch_avatar_soon(runtime: Runtime, profile_id: uuid.UUID) -> None:
    """After the sign-in committed: a profile sync fetches the picture the provider serves, so
    the broker serves it itself (the sync keeps a stored one whose URL did not change)."""
    try:
        await runtime.jobs.enqueue(
            JobName.SYNC_PROFILE,
            ProfileSyncPayload(profile_id=profile_id),
            job_id=avatar_job_id(profile_id, runtime.clock.now()),
        )
    except QueueUnavailableError as exc:
        log.warning("avatar.enqueue_failed", error=str(exc))  # the periodic sync will do it
