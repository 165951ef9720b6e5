"""Avatar images the broker keeps and serves itself, stored once per content hash.

Only real images pass: the type is read from the magic bytes (PNG, JPEG, GIF, WebP), never taken
from a ``Content-Type`` header, and the size is capped. The broker serves them at
``{issuer}/avatars/{sha256}`` — a URL that changes when the picture does, so it is cacheable
forever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import httpx2
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import AVATARS
from shared.providers.base import AvatarImage

MAX_AVATAR_BYTES = 1024 * 1024
AVATAR_TIMEOUT = 5.0


def sniff_image_type(data: bytes) -> str | None:
    """The image's media type from its first bytes, or None when it is not an accepted image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def avatar_image(data: bytes) -> AvatarImage | None:
    if not data or len(data) > MAX_AVATAR_BYTES:
        return None
    content_type = sniff_image_type(data)
    return AvatarImage(content=data, content_type=content_type) if content_type else None


class AvatarUnavailable(Exception):
    """The picture could not be read just now (5xx, 429, a timeout, a network error)."""


async def read_capped(response: httpx2.Response, max_bytes: int) -> bytes | None:
    """The raw body, or None as soon as it (or its declared length) passes ``max_bytes``.

    Raw bytes: a compressed body is not inflated (no decompression bomb) and fails the
    magic-bytes check instead; callers ask for ``Accept-Encoding: identity``.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


async def fetch_bearer_image(
    http: httpx2.AsyncClient, url: str, access_token: str
) -> AvatarImage | None:
    """GET an image with the user's token (a configured upstream URL, not one from a profile).

    None when there is no usable picture (404 or another refusal, too large, not an image);
    ``AvatarUnavailable`` when the upstream failed to answer. Neither ever fails a sign-in.
    """
    try:
        async with (
            asyncio.timeout(AVATAR_TIMEOUT),
            http.stream(
                "GET",
                url,
                headers={
                    "Authorization": f"Bearer {access_token}",
                    "Accept": "image/*",
                    "Accept-Encoding": "identity",
                },
                timeout=AVATAR_TIMEOUT,
            ) as response,
        ):
            if response.status_code >= 500 or response.status_code == 429:
                raise AvatarUnavailable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                return None
            body = await read_capped(response, MAX_AVATAR_BYTES)
    except (httpx2.HTTPError, TimeoutError) as exc:
        raise AvatarUnavailable(type(exc).__name__) from None
    return avatar_image(body) if body is not None else None


def avatar_digest(image: AvatarImage) -> str:
    return hashlib.sha256(image.content).hexdigest()


def avatar_url(issuer: str, digest: str) -> str:
    return f"{issuer}/avatars/{digest}"


async def store_avatar(connection: AsyncConnection, image: AvatarImage, now: dt.datetime) -> str:
    """Keep the image (once per content) and return its digest."""
    digest = avatar_digest(image)
    exists = (
        await connection.execute(select(AVATARS.c.digest).where(AVATARS.c.digest == digest))
    ).first()
    if exists is None:
        try:
            async with connection.begin_nested():
                await connection.execute(
                    insert(AVATARS).values(
                        digest=digest,
                        content_type=image.content_type,
                        content=image.content,
                        size=len(image.content),
                        created_at=now,
                    )
                )
        except IntegrityError:
            pass  # stored by a concurrent sign-in with the same picture
    return digest


async def load_avatar(connection: AsyncConnection, digest: str) -> AvatarImage | None:
    row = (
        await connection.execute(
            select(AVATARS.c.content, AVATARS.c.content_type).where(AVATARS.c.digest == digest)
        )
    ).first()
    return AvatarImage(content=row.content, content_type=row.content_type) if row else None
