"""OAuth 2.0 / OIDC errors: one class per RFC error code, rendered as JSON by one handler.

OAuthError                      {"error": code, "error_description": ...}
├── InvalidRequest              400  RFC 6749 §5.2
├── InvalidClient               401  RFC 6749 §5.2 (+ WWW-Authenticate for HTTP Basic)
├── InvalidGrant                400
├── UnauthorizedClient          400
├── UnsupportedGrantType        400
├── InvalidScope                400
├── InvalidTarget               400  RFC 8707 §2 (a resource or audience the client may not have)
├── UnsupportedResponseType     400  RFC 6749 §4.1.2.1 (authorization endpoint)
├── AccessDenied                403
├── LoginRequired               400  OIDC Core §3.1.2.6
├── RequestNotSupported         400  OIDC Core §3.1.2.6
├── RequestUriNotSupported      400
├── ServerError                 500  (only for failures that are ours, never bad input)
├── TemporarilyUnavailable      503
├── TooManyRequests             429  RFC 6585 §4 (+ Retry-After): an abuse limit was reached
├── InvalidToken                401  RFC 6750 §3.1 (+ WWW-Authenticate: Bearer)
├── InsufficientScope           403  RFC 6750 §3.1
├── NotFound                    404  (first-party API)
├── Conflict                    409  (first-party API)
└── PayloadTooLarge             413  (a request body over the cap: broker.http.body_limit)
"""

from __future__ import annotations

from oidc_broker_verifier.challenges import challenge
from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REALM = "oidc-broker"


class OAuthError(Exception):
    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str | None = None) -> None:
        if description:
            # A description may quote the request, and JSON may carry lone surrogates
            # ("\ud800") that no UTF-8 encoder accepts: kept as their escape, so rendering
            # or logging the error never fails (a 400 never becomes a 500).
            description = description.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(description or self.error)
        self.description = description

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def response(self, *, retry_after: int | None = None) -> JSONResponse:
        headers = self.headers()
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)  # RFC 9110 §10.2.3
        return JSONResponse(self.body(), status_code=self.status_code, headers=headers)


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status_code = 401

    def __init__(self, description: str | None = None, *, basic: bool = True) -> None:
        super().__init__(description)
        self.basic = basic

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        # RFC 6749 §5.2: a 401 for client authentication names the scheme the client may use.
        headers["WWW-Authenticate"] = challenge("Basic", {"realm": REALM, "charset": "UTF-8"})
        return headers


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class AccessDenied(OAuthError):
    error = "access_denied"
    status_code = 403


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the token is valid but lacks a scope; the header names the scope."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, description: str | None = None, *, scope: str) -> None:
        super().__init__(description)
        self.scope = scope

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["WWW-Authenticate"] = (
            f'Bearer realm="oidc-broker", error="insufficient_scope", scope="{self.scope}"'
        )
        return headers


class LoginRequired(OAuthError):
    error = "login_required"


class RequestNotSupported(OAuthError):
    error = "request_not_supported"


class RequestUriNotSupported(OAuthError):
    error = "request_uri_not_supported"


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503


class TooManyRequests(OAuthError):
    """An abuse limit (docs/security.md "Abuse limits"): 429 and when to come back.

    The code is RFC 6749's registered ``temporarily_unavailable`` ("retry later"), which OAuth
    client libraries already treat as transient, as they should here: ``invalid_request``
    would tell a relying party its request is malformed and not worth retrying, and
    ``slow_down`` belongs to device-flow polling (RFC 8628 §3.5). The 429 status and
    ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3) say the rest; no new code for relying
    parties to learn.
    """

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, description: str | None = None, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["Retry-After"] = str(self.retry_after)
        return headers


class NotFound(OAuthError):
    error = "invalid_request"
    status_code = 404


class Conflict(OAuthError):
    error = "invalid_request"
    status_code = 409


class PayloadTooLarge(OAuthError):
    """RFC 9110 §15.5.14; the error code stays ``invalid_request`` as RFC 6749 §5.2 has none."""

    error = "invalid_request"
    status_code = 413


class InvalidToken(OAuthError):
    error = "invalid_token"
    status_code = 401

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        params = {"realm": REALM, "error": self.error}
        if self.description:
            params["error_description"] = self.description
        # docs/security.md "Header values from input": any description, even one quoting the
        # request,
        # makes a header that can be sent (a 401 never becomes a 500).
        headers["WWW-Authenticate"] = challenge("Bearer", params)
        return headers
