"""Values quoted from a request are safe to send (docs/security.md "Header values").

An error quoting a JSON key that is a lone surrogate is a 400, not a 500.
"""

from __future__ import annotations

import pytest

from tests.support.flows import login

pytestmark = pytest.mark.integration

JSON = "application/json"


async def test_an_error_quoting_a_lone_surrogate_is_a_400_not_a_500(broker):
    tokens = await login(broker, provider="dev")
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "content-type": JSON}
    body = b'{"\\ud800": "x"}'  # valid JSON; the key is no valid UTF-8
    for method, path in (("PUT", "/auth/oauth2/profile"), ("DELETE", "/auth/oauth2/revoke")):
        response = await broker.request(method, path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {
            "error": "invalid_request",
            "error_description": "unknown field: \\ud800",
        }
