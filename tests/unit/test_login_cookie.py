"""docs/security.md "Login cookie": the login cookie is opaque, HttpOnly, SameSite=Lax, and Secure
off loopback."""

from __future__ import annotations

from broker.login.logins import SECURE_COOKIE, cookie_name, set_login_cookie
from shared.runtime import build_runtime
from shared.settings import make_settings
from starlette.responses import Response

PUBLIC = {
    "issuer": "https://login.example.com",
    "providers": [
        {"id": "corp", "type": "oidc", "issuer": "https://sso.example.com", "client_id": "b"}
    ],
}


async def test_public_issuer_sets_a_secure_host_prefixed_cookie():
    runtime = build_runtime(make_settings(**PUBLIC))
    try:
        response = Response()
        set_login_cookie(response, runtime, "opaque-value")
        cookie = response.headers["set-cookie"]
        assert cookie_name(runtime) == SECURE_COOKIE
        assert cookie.startswith("__Host-broker_login=opaque-value")
        lowered = cookie.lower()
        for attribute in ("secure", "httponly", "samesite=lax", "path=/"):
            assert attribute in lowered
        assert "domain=" not in lowered  # __Host- cookies never carry a Domain
    finally:
        await runtime.stop()


async def test_loopback_issuer_cookie_is_not_secure_so_plain_http_works():
    runtime = build_runtime(make_settings())
    try:
        response = Response()
        set_login_cookie(response, runtime, "v")
        assert "secure" not in response.headers["set-cookie"].lower()
    finally:
        await runtime.stop()
