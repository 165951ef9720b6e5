"""Errors render whatever text they quote from a request."""

from __future__ import annotations

import json

from broker.http.errors import InvalidRequest


def test_an_error_quoting_a_lone_surrogate_renders_instead_of_failing():
    response = InvalidRequest("unknown field: \ud800").response()
    assert response.status_code == 400
    assert json.loads(response.body)["error_description"] == "unknown field: \\ud800"
