"""``GET /avatars/{digest}``: pictures the broker stores itself (Microsoft Graph photos).

The URL names the content's SHA-256, so a response never changes: cacheable for a year. Served
with ``nosniff`` and a CSP that forbids everything, under the type sniffed when stored.
"""

from __future__ import annotations

import re

from shared.avatars import load_avatar
from starlette.requests import Request
from starlette.responses import Response

from broker.http.context import runtime_of
from broker.http.errors import NotFound
from broker.http.openapi import Answer, Contract, Operation, path_parameter

_DIGEST_PATTERN = r"^[0-9a-f]{64}$"
_DIGEST = re.compile(_DIGEST_PATTERN)


async def avatar(request: Request) -> Response:
    digest = request.path_params["digest"]
    if not _DIGEST.fullmatch(digest):
        raise NotFound("no such avatar")
    etag = f'"{digest}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    async with runtime_of(request).engine.connect() as connection:
        image = await load_avatar(connection, digest)
    if image is None:
        raise NotFound("no such avatar")
    return Response(
        image.content,
        media_type=image.content_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/avatars/{digest}",
            "avatar",
            "An avatar the broker stores, named by the SHA-256 of its content",
            "First-party API",
            parameters=(
                path_parameter(
                    "digest", {"type": "string", "pattern": _DIGEST_PATTERN}, "lower-case hex"
                ),
            ),
            answers=(
                Answer(200, "the image; cacheable for a year", {"image/*": {}}),
                Answer(304, "unchanged (If-None-Match)"),
            ),
            errors=(NotFound,),
        ),
    ),
)
