"""OPTIONS on the browser-facing endpoints: a CORS preflight gets its CORS answer, and any other
OPTIONS request a 405 naming the route's methods, never the endpoint's work.

Found fuzzing the API (tests/e2e/test_api_fuzzing.py): ``OPTIONS /token`` ran the token endpoint
(a grant, had the body been a good one), ``OPTIONS /userinfo`` answered the user's claims and
``OPTIONS /auth/oauth2/revoke`` would have ended the caller's session.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from broker.app import create_app
from shared.runtime import build_runtime
from shared.settings import make_settings

ISSUER = "http://127.0.0.1:8000"
SPA = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def app() -> Any:
    settings = make_settings(
        issuer=ISSUER, clients=[{"id": "spa", "redirect_uris": [f"{SPA}/callback"]}]
    )
    return create_app(build_runtime(settings))


async def _options(app: Any, path: str, headers: dict[str, str]) -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url=ISSUER) as client:
        return await client.request(
            "OPTIONS",
            path,
            headers=headers,
            content=b"grant_type=refresh_token&refresh_token=x&client_id=spa",
        )


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/token", "POST"),
        ("/auth/oauth2/refresh", "POST"),
        ("/revoke", "POST"),
        ("/auth/oauth2/revoke", "DELETE"),
        ("/userinfo", "GET, HEAD, POST"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer x"},
        {"Origin": SPA},  # a cross-origin request, but no preflight
    ],
    ids=["plain", "origin-only"],
)
async def test_an_options_request_that_is_no_preflight_runs_no_endpoint(
    app: Any, path: str, allowed: str, headers: dict[str, str]
) -> None:
    response = await _options(app, path, headers)
    assert response.status_code == 405, response.text
    assert response.json() == {
        "error": "method_not_allowed",
        "error_description": "Method Not Allowed",
    }
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("path", ["/token", "/userinfo", "/auth/oauth2/revoke"])
async def test_a_cors_preflight_from_a_registered_origin_is_still_answered(
    app: Any, path: str
) -> None:
    response = await _options(app, path, {"Origin": SPA, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SPA
