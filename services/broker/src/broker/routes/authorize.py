"""``GET /authorize`` and ``GET /auth/oauth2/{provider}/login``: validate, choose, go upstream."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

import structlog
from shared.provider_states import switched_off_now
from shared.providers.base import Provider
from shared.providers.errors import ProviderError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import InvalidRequest, OAuthError, TemporarilyUnavailable
from broker.http.forms import single_params
from broker.http.pages import chooser_page, error_page
from broker.login.linking import SignInFirst, confirm_link
from broker.login.logins import (
    ClientRequest,
    LinkOwner,
    SignInBeforeLink,
    cookie_name,
    new_browser_token,
    set_login_cookie,
    start_login,
)
from broker.login.refusals import provider_disabled
from broker.oauth.abuse_limits import login_start_refused
from broker.oauth.authorization import (
    ClientRejected,
    response_mode,
    validate_authorization_request,
    validate_client,
)
from broker.oauth.responses import error_response

log = structlog.get_logger("broker.authorize")


async def authorize(request: Request) -> Response:
    return await _authorize(request, fixed_provider=None)


async def provider_login(request: Request) -> Response:
    return await _authorize(request, fixed_provider=request.path_params["provider"])


async def authorize_link(
    request: Request, link_provider: str, start: LinkOwner | SignInFirst
) -> Response:
    """The link flow: the same request and redirect dance, bound to the freshly signed-in user;
    or, without a fresh sign-in in this browser, a sign-in first (through the provider the
    stale session used, the request's ``provider``, or the chooser) that then links."""
    if isinstance(start, LinkOwner):
        return await _authorize(request, fixed_provider=link_provider, link_owner=start)
    runtime = runtime_of(request)
    paused = await switched_off_now(runtime.engine)
    usable = (
        start.provider in runtime.providers
        and start.provider not in paused
        and start.provider != link_provider
    )
    return await _authorize(
        request,
        fixed_provider=start.provider if usable else None,
        before_link=SignInBeforeLink(link_provider=link_provider, user_id=start.user_id),
    )


async def _authorize(
    request: Request,
    fixed_provider: str | None,
    link_owner: LinkOwner | None = None,
    before_link: SignInBeforeLink | None = None,
) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        # OIDC Core §3.1.2.1: the authorization request may be form-serialized in a POST.
        body = (await request.body()).decode("utf-8", errors="replace")
        pairs = parse_qsl(body, keep_blank_values=True)
    try:
        params = single_params(pairs)
    except InvalidRequest as exc:
        return error_page("Invalid request", exc.description or "The request is malformed.")
    try:
        client, redirect_uri = validate_client(settings, params)
    except ClientRejected as exc:
        # RFC 6749 §4.1.2.1: never redirect to an unverified URI.
        return error_page(exc.title, exc.description)
    state = params.get("state")
    try:
        auth_request = validate_authorization_request(settings, client, redirect_uri, params)
        provider_id = fixed_provider or auth_request.provider
        # Read at every start, so an admin's switch reaches every replica at once
        # (docs/security.md "Switching a provider off").
        paused = await switched_off_now(runtime.engine)
        if before_link is not None and before_link.link_provider in paused:
            raise provider_disabled(before_link.link_provider)
        choices = {
            provider_id: provider
            for provider_id, provider in runtime.providers.items()
            if provider_id not in paused
            and (before_link is None or provider_id != before_link.link_provider)
        }
        if provider_id is None:
            if not choices:
                raise TemporarilyUnavailable("no identity provider is enabled")
            if len(choices) == 1:
                provider_id = next(iter(choices))
            else:
                path = request.url.path if before_link else None
                return _chooser(request, choices, client.name or client.id, pairs, path)
        if before_link is not None and provider_id == before_link.link_provider:
            raise InvalidRequest(f"sign in with another provider before linking {provider_id!r}")
        provider = choices.get(provider_id)
        if provider is None:
            if provider_id in paused and provider_id in runtime.providers:
                raise provider_disabled(provider_id)
            raise InvalidRequest(f"unknown provider {provider_id!r}")
        retry_after = await login_start_refused(runtime, request)
        if retry_after is not None:
            return _too_many_login_starts(retry_after)
        browser_token = new_browser_token(request.cookies.get(cookie_name(runtime)))
        try:
            started = await start_login(
                runtime,
                provider,
                ClientRequest.of(auth_request),
                browser_token,
                link_owner,
                before_link,
            )
        except ProviderError as exc:
            log.warning("upstream.authorize_failed", provider=provider_id, reason=str(exc))
            raise TemporarilyUnavailable("the identity provider is not reachable") from None
    except OAuthError as exc:
        return error_response(
            settings.issuer, redirect_uri, exc, state, response_mode(params) or "query"
        )
    if link_owner is not None:
        return await confirm_link(
            runtime, link_owner, provider.display_name, started, ClientRequest.of(auth_request)
        )
    response = RedirectResponse(started.upstream_url, status_code=302)
    set_login_cookie(response, runtime, started.browser_token)
    return response


def _too_many_login_starts(retry_after: int) -> Response:
    """docs/security.md "Abuse limits": this address started too many logins this window."""
    page = error_page(
        "Too many sign-in attempts",
        "Too many sign-ins were started from your network. Wait a few minutes and try again.",
        429,
    )
    page.headers["Retry-After"] = str(retry_after)  # RFC 6585 §4
    return page


def _chooser(
    request: Request,
    providers: Mapping[str, Provider],
    client_name: str,
    pairs: list[tuple[str, str]],
    same_path: str | None = None,
) -> Response:
    """The provider chooser: each choice the provider's login URL, or with ``same_path`` this
    path again with ``provider=<id>`` (a sign-in before a link)."""
    runtime = runtime_of(request)
    kept = [(k, v) for k, v in pairs if k != "provider"]
    issuer = runtime.settings.issuer
    choices = [
        (
            provider.display_name,
            f"{issuer}{same_path}?{urlencode([*kept, ('provider', provider_id)])}"
            if same_path
            else f"{issuer}/auth/oauth2/{provider_id}/login?{urlencode(kept)}",
        )
        for provider_id, provider in providers.items()
    ]
    return chooser_page(client_name, choices)
