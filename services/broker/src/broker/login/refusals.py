"""A sign-in that fails after the upstream answered: what the client is told, and counted.

Provider errors become OAuth errors (``client_error``) sent back to the client's redirect URI
with ``state`` and ``iss`` (``back_to_client``); a refused link is audited and, for a sign-in,
answered with the "account exists" page (``refused``).
"""

from __future__ import annotations

import structlog
from shared.providers.errors import (
    ProviderDenied,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from starlette.requests import Request
from starlette.responses import Response

from broker.http.context import runtime_of
from broker.http.errors import AccessDenied, OAuthError, ServerError, TemporarilyUnavailable
from broker.http.metrics import metrics_of
from broker.http.pages import account_exists_page
from broker.login.identity import Context, LinkRefused, UpstreamIdentity, record_refused_link
from broker.login.logins import PendingLogin
from broker.oauth.responses import client_error_location, error_response

log = structlog.get_logger("broker.upstream")

# Only a proven email (verified, the provider its authority) ever reaches these: an unproven one
# is compared with nobody's, so this page never tells a caller whose address it is
# (docs/security.md "Auto-linking needs both sides authoritative").
_REFUSAL_TEXT = {
    "auto_link_disabled": "Accounts are not joined automatically by email address.",
    "ambiguous_email": "More than one account uses this email address.",
}


async def refused(
    request: Request,
    pending: PendingLogin,
    identity: UpstreamIdentity,
    refusal: LinkRefused,
    context: Context,
) -> Response:
    """Audit the refusal; a sign-in gets the "account exists" page, a link flow an error."""
    runtime = runtime_of(request)
    owner = pending.link_owner
    async with runtime.engine.begin() as connection:
        await record_refused_link(
            connection, context, identity, refusal, user_id=owner.user_id if owner else None
        )
    log.info("link.refused", provider=identity.provider_id, reason=refusal.reason)
    if owner is not None:
        description = {
            "linked_to_another_user": "that account is already linked to another user",
            "provider_already_linked": "another account of this provider is already linked; "
            "unlink it first",
        }.get(refusal.reason, "the account cannot be linked")
        return back_to_client(request, pending, AccessDenied(description))
    metrics_of(request).login_finished(
        identity.provider_id, pending.request.client_id, "account_exists"
    )
    provider_name = runtime.providers[identity.provider_id].display_name
    explanation = _REFUSAL_TEXT.get(refusal.reason, "").format(provider=provider_name)
    back = client_error_location(
        runtime.settings.issuer,
        pending.request.redirect_uri,
        AccessDenied("an account with this email address already exists; sign in and link"),
        pending.request.state,
    )
    return account_exists_page(provider_name, explanation, back)


def client_error(exc: ProviderError) -> OAuthError:
    if isinstance(exc, ProviderDenied):
        return AccessDenied("the identity provider denied the sign-in")
    if isinstance(exc, ProviderUnavailable):
        return TemporarilyUnavailable("the identity provider is not reachable")
    if isinstance(exc, ProviderRejected):
        return AccessDenied("the identity provider rejected the sign-in")
    return ServerError("the identity provider's response failed validation")


def provider_disabled(provider_id: str) -> OAuthError:
    """An admin disabled the provider (docs/security.md "Switching a provider off"): RFC 6749
    §4.1.2.1 ``temporarily_unavailable``, so the client offers another way in or a retry later
    rather than reading it as the user's refusal (``access_denied``)."""
    return TemporarilyUnavailable(f"the identity provider {provider_id!r} is disabled")


def back_to_client(request: Request, pending: PendingLogin, error: OAuthError) -> Response:
    """The sign-in failed after the upstream answered: tell the client, and count it."""
    client_id = pending.request.client_id
    metrics_of(request).login_finished(request.path_params["provider"], client_id, error.error)
    return error_response(
        runtime_of(request).settings.issuer,
        pending.request.redirect_uri,
        error,
        pending.request.state,
        pending.request.response_mode,
    )
