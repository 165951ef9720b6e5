"""Plain JSON requests to an upstream (discovery, JWKS, UserInfo, REST APIs) with the failures
translated into provider errors: transport problems, timeouts, 5xx and 429 are
``ProviderUnavailable``; any other non-200 or a body that is not a JSON document is
``ProviderInvalidResponse``. Messages never carry a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2

from shared.providers.errors import ProviderInvalidResponse, ProviderUnavailable
from shared.providers.oauth2 import parse_retry_after


async def get_json(
    http: httpx2.AsyncClient,
    url: str,
    what: str,
    *,
    bearer: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET ``url`` and return the decoded JSON document (object or array)."""
    request_headers = {"Accept": "application/json", **(headers or {})}
    if bearer is not None:
        request_headers["Authorization"] = f"Bearer {bearer}"
    try:
        response = await http.get(url, headers=request_headers)
    except httpx2.TimeoutException:
        raise ProviderUnavailable(f"{what}: upstream timed out") from None
    except httpx2.TransportError as exc:
        raise ProviderUnavailable(f"{what}: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(
            f"{what}: upstream answered HTTP {response.status_code}",
            parse_retry_after(response.headers.get("retry-after")),
        )
    if response.status_code != 200:
        raise ProviderInvalidResponse(f"{what}: upstream answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ProviderInvalidResponse(f"{what}: response is not JSON") from None


async def get_json_object(
    http: httpx2.AsyncClient,
    url: str,
    what: str,
    *,
    bearer: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    document = await get_json(http, url, what, bearer=bearer, headers=headers)
    if not isinstance(document, dict):
        raise ProviderInvalidResponse(f"{what}: response is not a JSON object")
    return document
