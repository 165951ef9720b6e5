"""The SSRF guard of avatar fetches (docs/security.md "Guarded avatar fetches"): addresses, schemes,
resolution, pinning.

No network: the HTTP client runs on an ``httpx2.MockTransport`` that records what reached it,
and the resolver is injected.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx2
import pytest
from shared.guarded_fetch import FetchRefused, Resolver, fetch_image, is_public_address

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PUBLIC_IP = "93.184.216.34"


class Body(httpx2.AsyncByteStream):
    """A body that arrives like a network one: not read yet."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


class Upstream:
    """A mock transport answering every request with a PNG and keeping the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return httpx2.Response(200, stream=Body(PNG), headers={"Content-Type": "text/plain"})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def http(upstream: Upstream) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(upstream.handle)) as client:
        yield client


def resolving_to(*addresses: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def must_not_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal was resolved: {host}")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::7f00:1",  # deprecated IPv4-compatible form
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_IP,
        "8.8.8.8",
        "2606:4700::1111",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34 (IPv6-only networks with DNS64)
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    ],
)
def test_public_addresses_are_accepted(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.png",
        "https://10.0.0.1/a.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/a.png",
        "https://0.0.0.0/a.png",
        "https://[::1]/a.png",
        "https://[::ffff:127.0.0.1]/a.png",
        "https://[fe80::1]/a.png",
    ],
)
async def test_ip_literal_hosts_are_checked_without_resolving(
    http: httpx2.AsyncClient, upstream: Upstream, url: str
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, url, allow_private=False, resolve=must_not_resolve)
    assert refused.value.reason == "address not allowed"
    assert upstream.requests == []


async def test_a_public_ip_literal_is_fetched(http: httpx2.AsyncClient, upstream: Upstream) -> None:
    url = f"https://{PUBLIC_IP}/a.png"
    image = await fetch_image(http, url, allow_private=False, resolve=must_not_resolve)
    assert image.content == PNG
    assert [str(request.url) for request in upstream.requests] == [url]
    assert "sni_hostname" not in upstream.requests[0].extensions


async def test_http_is_refused_without_allow_private(
    http: httpx2.AsyncClient, upstream: Upstream
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            http,
            "http://avatars.example.com/a.png",
            allow_private=False,
            resolve=resolving_to(PUBLIC_IP),
        )
    assert refused.value.reason == "scheme 'http' not allowed"
    assert upstream.requests == []


async def test_http_and_private_addresses_are_allowed_with_allow_private(
    http: httpx2.AsyncClient, upstream: Upstream
) -> None:
    image = await fetch_image(
        http,
        "http://stand-in.test:8080/a.png",
        allow_private=True,
        resolve=resolving_to("127.0.0.1"),
    )
    assert image.content_type == "image/png"
    assert str(upstream.requests[0].url) == "http://127.0.0.1:8080/a.png"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://avatars.example.com/a.png",
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://avatars.example.com/",
        "javascript:alert(1)",
    ],
)
async def test_other_schemes_are_refused_even_with_allow_private(
    http: httpx2.AsyncClient, upstream: Upstream, url: str
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, url, allow_private=True, resolve=resolving_to("127.0.0.1"))
    assert refused.value.reason.startswith("scheme ")
    assert upstream.requests == []


async def test_credentials_in_the_url_are_refused(
    http: httpx2.AsyncClient, upstream: Upstream
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            http,
            "https://user:secret@avatars.example.com/a.png",
            allow_private=False,
            resolve=resolving_to(PUBLIC_IP),
        )
    assert refused.value.reason == "credentials in URL"
    assert "secret" not in str(refused.value)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.5"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["::ffff:127.0.0.1"],
        [PUBLIC_IP, "127.0.0.1"],  # any one refused address refuses the name
        ["2606:4700::1111", "fd00::1"],
    ],
)
async def test_a_public_looking_name_resolving_to_a_private_address_is_refused(
    http: httpx2.AsyncClient, upstream: Upstream, addresses: list[str]
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            http,
            "https://avatars.example.com/a.png",
            allow_private=False,
            resolve=resolving_to(*addresses),
        )
    assert refused.value.reason == "address not allowed"
    assert upstream.requests == []


async def test_a_name_that_does_not_resolve_is_refused(
    http: httpx2.AsyncClient, upstream: Upstream
) -> None:
    async def unknown(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    for resolver in (unknown, resolving_to(), resolving_to("not-an-ip")):
        with pytest.raises(FetchRefused) as refused:
            await fetch_image(
                http, "https://nowhere.example.com/a.png", allow_private=True, resolve=resolver
            )
        assert refused.value.reason == "host did not resolve"
    assert upstream.requests == []


async def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_sni(
    upstream: Upstream,
) -> None:
    resolved: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append((host, port))
        return [PUBLIC_IP]

    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(upstream.handle),
        headers={"User-Agent": "oidc-broker-test", "Authorization": "Bearer client-default"},
        cookies={"session": "broker-cookie"},
        auth=("client", "secret"),
    ) as http:
        image = await fetch_image(
            http, "https://avatars.example.com/u/1.png?s=96", allow_private=False, resolve=resolve
        )

    assert image.content == PNG
    assert image.content_type == "image/png"  # from the magic bytes, not the text/plain header
    assert resolved == [("avatars.example.com", 443)]
    (request,) = upstream.requests
    assert str(request.url) == f"https://{PUBLIC_IP}/u/1.png?s=96"
    assert request.headers["Host"] == "avatars.example.com"
    assert request.extensions["sni_hostname"] == "avatars.example.com"
    assert request.headers["Accept"] == "image/*"
    assert request.headers["User-Agent"] == "oidc-broker-test"
    assert "Cookie" not in request.headers
    assert "Authorization" not in request.headers


async def test_the_refusal_message_leaves_out_the_query_string(http: httpx2.AsyncClient) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            http,
            "http://avatars.example.com/u/1.png?sig=s3cr3t#frag",
            allow_private=False,
            resolve=resolving_to(PUBLIC_IP),
        )
    assert str(refused.value) == "scheme 'http' not allowed: http://avatars.example.com/u/1.png"
