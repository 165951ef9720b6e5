"""Upstream logins in flight: start one (state, nonce, PKCE, browser binding) and finish it.

docs/security.md "Upstream state and mix-up defence": the upstream ``state`` is random, single use,
short-lived, bound to this browser
(a cookie) and to the provider it was sent to. A callback with an unknown, used, expired or
foreign state, or at another provider's callback path, is refused before any token request
reaches the upstream (mix-up defence, RFC 9700 §4.4).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.crypto.opaque import new_opaque_token, token_hash
from shared.crypto.sealed_columns import LOGIN_CODE_VERIFIER
from shared.db.tables import LOGIN_STATES
from shared.providers.base import LoginStart, Provider
from shared.runtime import Runtime
from sqlalchemy import insert, update
from starlette.responses import Response

from broker.http import cookies
from broker.oauth.authorization import AuthorizationRequest

LOGIN_COOKIE = "broker_login"
SECURE_COOKIE = f"__Host-{LOGIN_COOKIE}"


def cookie_name(runtime: Runtime) -> str:
    return cookies.cookie_name(runtime, LOGIN_COOKIE)


def set_login_cookie(response: Response, runtime: Runtime, value: str) -> None:
    """Lives as long as a login may take upstream."""
    cookies.set_cookie(response, runtime, LOGIN_COOKIE, value, runtime.settings.login_ttl)


def callback_url(runtime: Runtime, provider_id: str) -> str:
    return f"{runtime.settings.issuer}/auth/oauth2/{provider_id}/callback"


@dataclass(frozen=True)
class StartedLogin:
    upstream_url: str
    browser_token: str


def new_browser_token(existing: str | None) -> str:
    """Keep a well-formed existing cookie (parallel tabs), else make one."""
    if (
        existing
        and 40 <= len(existing) <= 64
        and existing.replace("-", "").replace("_", "").isalnum()
    ):
        return existing
    return new_opaque_token()


@dataclass(frozen=True)
class LinkOwner:
    """The user a link flow attaches the new identity to, and the browser's broker session
    that started it (None when the link follows a fresh sign-in: ``SignInBeforeLink``)."""

    user_id: uuid.UUID
    session_id: uuid.UUID | None


@dataclass(frozen=True)
class SignInBeforeLink:
    """A sign-in that a link flow asked for first (docs/security.md "Linking needs a fresh
    browser sign-in"): when it succeeds, ``link_provider`` is linked to the user who signed in,
    who must be ``user_id`` when the broker knew whom to expect."""

    link_provider: str
    user_id: uuid.UUID | None


@dataclass(frozen=True)
class ClientRequest:
    """The relying party's authorization request, replayed when the upstream answers."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    response_mode: str | None
    prompt: str | None
    max_age: int | None

    @classmethod
    def of(cls, request: AuthorizationRequest) -> ClientRequest:
        return cls(
            client_id=request.client.id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            state=request.state,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            response_mode=request.response_mode,
            prompt=request.prompt,
            max_age=request.max_age,
        )


@dataclass(frozen=True)
class PendingLogin:
    """A consumed login state: the client's request and our upstream secrets."""

    login_id: uuid.UUID
    provider: str
    request: ClientRequest
    link_owner: LinkOwner | None
    sign_in_before_link: SignInBeforeLink | None
    started_at: dt.datetime
    start: LoginStart


async def start_login(
    runtime: Runtime,
    provider: Provider,
    request: ClientRequest,
    browser_token: str,
    link_owner: LinkOwner | None = None,
    before_link: SignInBeforeLink | None = None,
) -> StartedLogin:
    """Record the login server-side and build the upstream authorization URL: a sign-in, a
    link (``link_owner``), or a sign-in that a link continues from (``before_link``)."""
    now = runtime.clock.now()
    state = new_opaque_token()
    start = LoginStart(
        redirect_uri=callback_url(runtime, provider.id),
        state=state,
        nonce=secrets.token_urlsafe(24),
        code_verifier=secrets.token_urlsafe(48),  # 64 characters, RFC 7636 §4.1
        prompt=request.prompt,
        max_age=request.max_age,
    )
    upstream_url = await provider.authorization_url(start)
    login_id = uuid.uuid4()
    async with runtime.engine.begin() as connection:
        await connection.execute(
            insert(LOGIN_STATES).values(
                id=login_id,
                state_hash=token_hash(state),
                browser_hash=token_hash(browser_token),
                provider=provider.id,
                purpose="link" if link_owner else "reauth" if before_link else "login",
                user_id=(
                    link_owner.user_id
                    if link_owner
                    else before_link.user_id
                    if before_link
                    else None
                ),
                session_id=link_owner.session_id if link_owner else None,
                link_provider=before_link.link_provider if before_link else None,
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                scope=request.scope,
                client_state=request.state,
                nonce=request.nonce,
                code_challenge=request.code_challenge,
                code_challenge_method=request.code_challenge_method,
                response_mode=request.response_mode,
                prompt=request.prompt,
                max_age=request.max_age,
                upstream_nonce=start.nonce,
                code_verifier_enc=runtime.settings.keyring.encrypt(
                    start.code_verifier.encode(), LOGIN_CODE_VERIFIER.aad(login_id)
                ),
                created_at=now,
                expires_at=now + dt.timedelta(seconds=runtime.settings.login_ttl),
            )
        )
    return StartedLogin(upstream_url=upstream_url, browser_token=browser_token)


async def restart_with_consent(
    runtime: Runtime, provider: Provider, pending: PendingLogin, browser_token: str
) -> StartedLogin:
    """The same login again, asking the upstream to show its consent screen (Google issues a
    refresh token only there)."""
    prompt = " ".join(dict.fromkeys([*(pending.request.prompt or "").split(), "consent"]))
    request = dataclasses.replace(pending.request, prompt=prompt)
    return await start_login(
        runtime, provider, request, browser_token, pending.link_owner, pending.sign_in_before_link
    )


async def consume_login(
    runtime: Runtime, provider_id: str, state: str, browser_token: str | None
) -> PendingLogin | None:
    """Mark the state used if it is live, ours, this browser's and this provider's; else None."""
    if not browser_token:
        return None
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        row = (
            await connection.execute(
                update(LOGIN_STATES)
                .where(
                    LOGIN_STATES.c.state_hash == token_hash(state),
                    LOGIN_STATES.c.browser_hash == token_hash(browser_token),
                    LOGIN_STATES.c.provider == provider_id,
                    LOGIN_STATES.c.used_at.is_(None),
                    LOGIN_STATES.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(*LOGIN_STATES.c)
            )
        ).first()
    if row is None:
        return None
    verifier = runtime.settings.keyring.decrypt(
        row.code_verifier_enc, LOGIN_CODE_VERIFIER.aad(row.id)
    ).decode()
    link_owner = None
    if row.purpose == "link" and row.user_id is not None:
        link_owner = LinkOwner(user_id=row.user_id, session_id=row.session_id)
    before_link = None
    if row.purpose == "reauth" and row.link_provider is not None:
        before_link = SignInBeforeLink(link_provider=row.link_provider, user_id=row.user_id)
    return PendingLogin(
        login_id=row.id,
        provider=row.provider,
        request=ClientRequest(
            client_id=row.client_id,
            redirect_uri=row.redirect_uri,
            scope=row.scope,
            state=row.client_state,
            nonce=row.nonce,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
            response_mode=row.response_mode,
            prompt=row.prompt,
            max_age=row.max_age,
        ),
        link_owner=link_owner,
        sign_in_before_link=before_link,
        started_at=row.created_at,
        start=LoginStart(
            redirect_uri=callback_url(runtime, provider_id),
            state=state,
            nonce=row.upstream_nonce,
            code_verifier=verifier,
            prompt=row.prompt,
            max_age=row.max_age,
        ),
    )


AUTH_TIME_LEEWAY = 60


class ReauthenticationMissing(Exception):
    """``prompt=login`` or ``max_age`` asked for a fresh sign-in the upstream did not do."""


def authentication_time(
    pending: PendingLogin, claims: Mapping[str, Any], now: dt.datetime
) -> dt.datetime:
    """When the person actually authenticated (OIDC Core §2 ``auth_time``).

    The upstream's ``auth_time`` when it asserts one (the dev form asserts the moment it was
    submitted), else now — unless ``max_age`` or ``prompt=login`` asked for proof. Both are
    enforced on it, so a relying party's step-up request cannot be satisfied by an old
    upstream session.
    """
    upstream = claims.get("auth_time")
    step_up = pending.start.max_age is not None or (
        pending.start.prompt is not None and "login" in pending.start.prompt.split()
    )
    if isinstance(upstream, int | float) and not isinstance(upstream, bool):
        auth_time = min(dt.datetime.fromtimestamp(upstream, dt.UTC), now)
    elif step_up:
        # GitHub, or Entra without the auth_time optional claim: nothing says the person
        # signed in again, so a step-up request cannot be honoured (OIDC Core §3.1.2.1).
        raise ReauthenticationMissing("the identity provider does not assert auth_time")
    else:
        auth_time = now
    leeway = dt.timedelta(seconds=AUTH_TIME_LEEWAY)
    if (
        pending.start.max_age is not None
        and auth_time < now - dt.timedelta(seconds=pending.start.max_age) - leeway
    ):
        raise ReauthenticationMissing("the upstream sign-in is older than max_age")
    if pending.start.prompt and "login" in pending.start.prompt.split():
        if auth_time < pending.started_at - leeway:
            raise ReauthenticationMissing("prompt=login, but the upstream did not re-authenticate")
    return auth_time
