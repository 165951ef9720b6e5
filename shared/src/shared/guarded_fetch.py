"""Fetch an avatar image from a URL an upstream profile gave us, guarded against SSRF.

The rules (docs/security.md "Guarded avatar fetches"), checked on the first request and again on
every redirect hop:

- ``https`` only; ``http`` too only with ``allow_private`` (``BROKER_ALLOW_PRIVATE_NETWORK_FETCH``,
  meant for tests and local stand-ins), which also lifts the address rule below;
- no credentials in the URL, none sent (no cookies, no client auth);
- the host is resolved here and refused if any address is loopback, private, link-local,
  multicast, reserved, unspecified, CGNAT, or an IPv4-mapped / 6to4 / NAT64 form of one;
- the connection goes to an address that was checked, never to the name again (DNS rebinding);
- at most ``max_redirects`` redirects, followed by hand;
- a 200 only, at most ``max_bytes`` of body, the whole fetch within ``timeout``;
- the image type comes from the magic bytes, never from ``Content-Type``.

Every failure is a :class:`FetchRefused`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx2

from shared.avatars import AVATAR_TIMEOUT, MAX_AVATAR_BYTES, read_capped, sniff_image_type
from shared.providers.base import AvatarImage

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port)`` -> the IP addresses (as strings) the name resolves to."""

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 6598 shared address space; Python's ``is_global`` excludes it too, said here explicitly.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address really reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchRefused(Exception):
    """Why a URL was not fetched; ``str()`` is safe to log (no query string)."""

    def __init__(self, reason: str, url: httpx2.URL | None = None) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {_loggable(url)}" if url is not None else reason)


def _loggable(url: httpx2.URL) -> str:
    # Avatar URLs can carry signatures in the query string; scheme, host and path are enough.
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{path}"


def is_public_address(address: str) -> bool:
    """Whether an IP address may be fetched from without ``allow_private`` (docs/security.md
    "Guarded avatar fetches")."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 form that really reaches an IPv4 address is judged by that address:
        # ::ffff:127.0.0.1 is loopback, 2002:7f00:1:: and 64:ff9b::7f00:1 lead there too.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _CGNAT
        or not ip.is_global
    )


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def fetch_image(
    http: httpx2.AsyncClient,
    url: str,
    *,
    allow_private: bool,
    resolve: Resolver | None = None,
    max_bytes: int = MAX_AVATAR_BYTES,
    timeout: float = AVATAR_TIMEOUT,  # noqa: ASYNC109 - the API; applied with asyncio.timeout
    max_redirects: int = 3,
) -> AvatarImage:
    """GET the image at ``url`` under the rules above, or raise :class:`FetchRefused`."""
    resolver = resolve or _system_resolve
    try:
        current = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError):
        raise FetchRefused("invalid URL") from None
    try:
        async with asyncio.timeout(timeout):
            redirects = 0
            while True:
                addresses = await _checked_addresses(current, allow_private, resolver)
                response = await _send_pinned(http, current, addresses, httpx2.Timeout(timeout))
                try:
                    location = response.headers.get("Location")
                    if response.status_code not in _REDIRECT_STATUSES or location is None:
                        return await _read_image(response, current, max_bytes)
                finally:
                    await response.aclose()
                if redirects == max_redirects:
                    raise FetchRefused("too many redirects", current)
                redirects += 1
                # Redirects are followed by hand so that every hop passes the same checks.
                current = current.join(location)
    except (TimeoutError, httpx2.TimeoutException):
        raise FetchRefused("timed out", current) from None
    except httpx2.InvalidURL:
        raise FetchRefused("invalid URL", current) from None
    except httpx2.HTTPError as exc:
        raise FetchRefused(f"transport error ({type(exc).__name__})", current) from exc


async def _checked_addresses(url: httpx2.URL, allow_private: bool, resolve: Resolver) -> list[str]:
    """The addresses ``url`` may be fetched from, resolved once here (docs/security.md "Guarded
    avatar fetches")."""
    if url.scheme not in (("https", "http") if allow_private else ("https",)):
        raise FetchRefused(f"scheme {url.scheme!r} not allowed", url)
    if url.userinfo:
        raise FetchRefused("credentials in URL", url)
    if not url.host:
        raise FetchRefused("no host", url)
    if _is_ip_literal(url.host):
        addresses = [url.host]
    else:
        try:
            addresses = await resolve(url.raw_host.decode("ascii"), _port(url))
        except OSError:
            raise FetchRefused("host did not resolve", url) from None
    if not addresses or not all(_is_ip_literal(address) for address in addresses):
        raise FetchRefused("host did not resolve", url)
    # All of them, not just the first: the connection may end up on any of them.
    if not allow_private and not all(is_public_address(address) for address in addresses):
        raise FetchRefused("address not allowed", url)
    return addresses


async def _send_pinned(
    http: httpx2.AsyncClient, url: httpx2.URL, addresses: list[str], limits: httpx2.Timeout
) -> httpx2.Response:
    """Send the GET to the checked addresses themselves, in order, until one connects.

    docs/security.md "Guarded avatar fetches" (DNS rebinding): the request URL carries the IP
    literal, so httpcore connects
    to it without resolving anything; the name travels in ``Host`` and, for TLS, in the
    ``sni_hostname`` extension, which httpcore uses for SNI and for certificate verification.
    """
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Accept": "image/*",
        # The body is read raw; with no decoding a small gzip body cannot expand past the limit.
        "Accept-Encoding": "identity",
    }
    user_agent = http.headers.get("User-Agent")
    if user_agent:
        headers["User-Agent"] = user_agent
    extensions: dict[str, object] = {"timeout": limits.as_dict()}
    if not _is_ip_literal(url.host):
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    refused: httpx2.ConnectError | None = None
    for address in addresses:
        # Built by hand, not with ``http.build_request``: nothing of the shared client's cookies,
        # default headers or auth is merged in (``auth=None`` below drops client auth too).
        request = httpx2.Request(
            "GET", url.copy_with(host=address), headers=headers, extensions=extensions
        )
        try:
            response = await http.send(request, stream=True, auth=None, follow_redirects=False)
        except httpx2.ConnectError as exc:
            refused = exc
            continue
        _forget_cookies(http, request.url.host)
        return response
    assert refused is not None
    raise refused


def _forget_cookies(http: httpx2.AsyncClient, host: str) -> None:
    """Drop what the response's ``Set-Cookie`` put in the shared client's jar (docs/security.md
    "Guarded avatar fetches").

    ``AsyncClient.send`` stores every response's cookies under the request host — here the IP
    literal (``[v6].local`` for IPv6) — where any later request of the broker to that address
    would send them back.
    """
    forms = {host, f"{host}.local", f"[{host}]", f"[{host}].local"}
    for domain in {cookie.domain for cookie in http.cookies.jar} & forms:
        http.cookies.jar.clear(domain)


async def _read_image(response: httpx2.Response, url: httpx2.URL, max_bytes: int) -> AvatarImage:
    if response.status_code != 200:
        raise FetchRefused(f"status {response.status_code}", url)
    content = await read_capped(response, max_bytes)
    if content is None:
        raise FetchRefused("too large", url)
    content_type = sniff_image_type(content)
    if content_type is None:
        raise FetchRefused("not an image", url)
    return AvatarImage(content=content, content_type=content_type)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port(url: httpx2.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)
