"""Avatar fetches against real local servers: limits, redirects, refusals, pinning (docs/security.md
"Guarded avatar fetches").

Two worlds:

- plain HTTP servers on 127.0.0.x, reachable only with ``allow_private=True`` (or refused
  without it, before a single connection reaches them);
- a small "internet" for ``allow_private=False``: a TLS server whose certificate names
  ``public.test``, reached through an httpcore network backend that routes connections for
  chosen IP addresses to it and records every address asked for. The code under test resolves
  ``public.test`` to a public address with the injected resolver and must connect to exactly
  that address, with the name in SNI and ``Host``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpcore2
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from shared.avatars import MAX_AVATAR_BYTES
from shared.guarded_fetch import FetchRefused, Resolver, fetch_image

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PUBLIC_IP = "93.184.216.34"
OTHER_PUBLIC_IP = "93.184.216.35"
INTERNAL_IP = "10.0.0.1"


@dataclass
class Seen:
    target: str
    headers: dict[str, str]


@dataclass
class AvatarServer:
    """A real HTTP(S) server on one 127.0.0.x address that records what reached it."""

    host: str = "127.0.0.1"
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        if tls is not None:
            tls.sni_callback = self._record_sni
        self._server = await asyncio.start_server(self._handle, self.host, port, ssl=tls)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def _record_sni(self, _sock: Any, name: str | None, _context: Any) -> None:
        self.sni.append(name)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            target = request_line.split(" ")[1]
            headers = dict(line.split(": ", 1) for line in lines if line)
            self.requests.append(Seen(target, {k.lower(): v for k, v in headers.items()}))
            await self._respond(target, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _respond(self, target: str, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(target)
        path = parts.path
        if path == "/avatar.png":
            send(writer, 200, PNG, "Content-Type: image/png", "Set-Cookie: tracker=1; Path=/")
        elif path == "/lying.png":
            send(writer, 200, b"<html>not an image</html>", "Content-Type: image/png")
        elif path == "/huge-declared.png":
            # Announces more than the limit, then never sends it: only an early refusal is fast.
            writer.write(response_head(200, f"Content-Length: {MAX_AVATAR_BYTES + 1}"))
            await hold(writer)
        elif path == "/huge-streamed.png":
            # No length announced; more than the limit arrives and the body never ends.
            writer.write(response_head(200, "Transfer-Encoding: chunked"))
            for piece in (PNG, *[b"\x00" * 1000] * 10):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await hold(writer)
        elif path == "/silent.png":
            await asyncio.sleep(30)
        elif path == "/trickle.png":
            # A byte every 0.1 s: no read waits long, only a bound on the whole fetch ends it.
            writer.write(response_head(200, "Transfer-Encoding: chunked"))
            writer.write(b"%x\r\n%s\r\n" % (len(PNG), PNG))
            while True:
                writer.write(b"1\r\n\x00\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
        elif path == "/dir/redirect":
            send(writer, 302, b"", "Location: ../avatar.png")
        elif path.startswith("/countdown/"):
            left = int(path.rsplit("/", 1)[1])
            if left:
                send(writer, 302, b"", f"Location: /countdown/{left - 1}")
            else:
                send(writer, 200, PNG)
        elif path == "/to":
            send(writer, 302, b"", f"Location: {parse_qs(parts.query)['location'][0]}")
        else:
            send(writer, 404, b"not found")
        await writer.drain()


def response_head(status: int, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(writer: asyncio.StreamWriter, status: int, body: bytes, *headers: str) -> None:
    writer.write(response_head(status, f"Content-Length: {len(body)}", *headers) + body)


async def hold(writer: asyncio.StreamWriter) -> None:
    await writer.drain()
    await asyncio.sleep(30)


def resolving(mapping: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return mapping[host]

    return resolve


@pytest.fixture
async def server() -> AsyncIterator[AvatarServer]:
    running = AvatarServer()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    # trust_env=False: a proxy from the environment must not carry requests meant for 127.0.0.1.
    async with httpx2.AsyncClient(trust_env=False) as client:
        yield client


# --- allow_private=True: the local stand-ins -------------------------------------------------


async def test_with_allow_private_the_png_is_fetched_and_a_relative_redirect_followed(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    image = await fetch_image(http, server.url("/avatar.png"), allow_private=True)
    assert (image.content, image.content_type) == (PNG, "image/png")

    image = await fetch_image(http, server.url("/dir/redirect"), allow_private=True)
    assert image.content == PNG
    assert [seen.target for seen in server.requests] == [
        "/avatar.png",
        "/dir/redirect",
        "/avatar.png",
    ]
    assert all(seen.headers["accept"] == "image/*" for seen in server.requests)


async def test_exactly_max_redirects_are_followed(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    image = await fetch_image(http, server.url("/countdown/3"), allow_private=True)
    assert image.content == PNG
    server.requests.clear()

    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, server.url("/countdown/4"), allow_private=True, max_redirects=3)
    assert refused.value.reason == "too many redirects"
    assert [seen.target for seen in server.requests] == [f"/countdown/{n}" for n in (4, 3, 2, 1)]


async def test_the_image_type_comes_from_the_magic_bytes_not_the_header(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, server.url("/lying.png"), allow_private=True)
    assert refused.value.reason == "not an image"


async def test_a_declared_length_over_the_limit_is_refused_without_waiting_for_the_body(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, server.url("/huge-declared.png"), allow_private=True, timeout=3)
    assert refused.value.reason == "too large"


async def test_a_body_streaming_past_the_limit_is_refused_as_soon_as_it_passes(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            http, server.url("/huge-streamed.png"), allow_private=True, max_bytes=4096, timeout=3
        )
    assert refused.value.reason == "too large"


@pytest.mark.parametrize("path", ["/silent.png", "/trickle.png"])
async def test_a_slow_response_times_out(
    http: httpx2.AsyncClient, server: AvatarServer, path: str
) -> None:
    started = time.monotonic()
    async with asyncio.timeout(5):  # the test's own bound, so a missing limit fails, not hangs
        with pytest.raises(FetchRefused) as refused:
            await fetch_image(http, server.url(path), allow_private=True, timeout=0.5)
    assert refused.value.reason == "timed out"
    assert time.monotonic() - started < 2


async def test_a_non_200_answer_is_refused(http: httpx2.AsyncClient, server: AvatarServer) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, server.url("/missing.png"), allow_private=True)
    assert refused.value.reason == "status 404"


async def test_no_cookies_or_credentials_are_sent_and_none_are_kept(server: AvatarServer) -> None:
    async with httpx2.AsyncClient(
        trust_env=False,
        cookies={"session": "broker-cookie"},
        headers={"Authorization": "Bearer client-default"},
        auth=("client", "secret"),
    ) as http:
        await fetch_image(http, server.url("/avatar.png"), allow_private=True)
        (seen,) = server.requests
        assert "cookie" not in seen.headers
        assert "authorization" not in seen.headers
        # The answer's Set-Cookie does not stay in the shared client's jar.
        assert [cookie.name for cookie in http.cookies.jar] == ["session"]


async def test_an_address_that_does_not_connect_falls_back_to_the_next_checked_one(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    resolve = resolving({"stand-in.test": ["127.0.0.3", "127.0.0.1"]})
    url = server.url("/avatar.png", host="stand-in.test")
    image = await fetch_image(http, url, allow_private=True, resolve=resolve)
    assert image.content == PNG
    assert server.requests[0].headers["host"] == f"stand-in.test:{server.port}"


# --- allow_private=False against the same local server ---------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/avatar.png",
        "https://[::ffff:127.0.0.1]:{port}/avatar.png",
        "http://127.0.0.1:{port}/avatar.png",
        "https://localhost:{port}/avatar.png",  # the system resolver says 127.0.0.1
        "https://2130706433:{port}/avatar.png",  # 127.0.0.1 written as one number
    ],
)
async def test_without_allow_private_loopback_is_refused_before_any_connection(
    http: httpx2.AsyncClient, server: AvatarServer, url: str
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(http, url.format(port=server.port), allow_private=False)
    assert refused.value.reason in ("address not allowed", "scheme 'http' not allowed")
    assert server.connections == 0


# --- DNS rebinding: the connection goes to the address that was checked ----------------------


async def test_dns_rebinding_the_connection_goes_to_the_address_that_was_checked(
    http: httpx2.AsyncClient, server: AvatarServer
) -> None:
    # `server` (127.0.0.1) is where the system resolver sends `localhost`, i.e. where a client
    # resolving the name again would land; `checked` (127.0.0.2, same port) is what the injected
    # resolver said first. Later answers point elsewhere, like a rebinding DNS server.
    checked = AvatarServer(host="127.0.0.2")
    await checked.start(port=server.port)
    answers = iter([["127.0.0.2"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["127.0.0.1"])

    try:
        url = checked.url("/avatar.png", host="localhost")
        image = await fetch_image(http, url, allow_private=True, resolve=rebinding)
    finally:
        await checked.stop()

    assert image.content == PNG
    assert calls == ["localhost"]
    assert [seen.headers["host"] for seen in checked.requests] == [f"localhost:{server.port}"]
    assert server.connections == 0


# --- allow_private=False over TLS in a small routed "internet" -------------------------------


@dataclass(frozen=True)
class Certificates:
    ca_pem: bytes
    chain_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA and a server certificate for public.test, cdn.public.test, internal.test
    and 10.0.0.1 (not other.test)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(
        "guarded-fetch test CA",
        ca_key,
        None,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(name) for name in ("public.test", "cdn.public.test", "internal.test")]
    leaf = _certificate(
        "public.test",
        key,
        ca.subject,
        ca_key,
        [
            (
                x509.SubjectAlternativeName(
                    [*names, x509.IPAddress(ipaddress.ip_address(INTERNAL_IP))]
                ),
                False,
            ),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    directory = tmp_path_factory.mktemp("tls")
    chain_path, key_path = directory / "chain.pem", directory / "key.pem"
    chain_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificates(ca.public_bytes(serialization.Encoding.PEM), chain_path, key_path)


class RoutedBackend(httpcore2.AsyncNetworkBackend):
    """The network, played locally: connections to the routed addresses reach the TLS server."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes
        self.connected: list[str] = []
        self._real = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.connected.append(host)
        if host not in self.routes:
            raise httpcore2.ConnectError(f"no route to {host}")
        return await self._real.connect_tcp("127.0.0.1", self.routes[host], timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class RoutedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's own transport (exception mapping and all) over a pool on ``RoutedBackend``."""

    def __init__(self, backend: RoutedBackend, tls: ssl.SSLContext) -> None:
        super().__init__()
        # AsyncHTTPTransport takes no network backend; the httpcore pool it wraps does.
        self._pool = httpcore2.AsyncConnectionPool(ssl_context=tls, network_backend=backend)


@dataclass
class Internet:
    server: AvatarServer
    backend: RoutedBackend
    http: httpx2.AsyncClient


@pytest.fixture
async def internet(certificates: Certificates) -> AsyncIterator[Internet]:
    server = AvatarServer()
    await server.start(tls=certificates.server_context())
    backend = RoutedBackend(
        {address: server.port for address in (PUBLIC_IP, OTHER_PUBLIC_IP, INTERNAL_IP)}
    )
    transport = RoutedTransport(backend, certificates.client_context())
    async with httpx2.AsyncClient(transport=transport) as http:
        yield Internet(server, backend, http)
    await server.stop()


DNS = resolving(
    {
        "public.test": [PUBLIC_IP],
        "other.test": [PUBLIC_IP],
        "cdn.public.test": [OTHER_PUBLIC_IP],
        "internal.test": [INTERNAL_IP],
    }
)


async def test_https_fetch_connects_to_the_checked_ip_with_the_name_in_sni_and_host(
    internet: Internet,
) -> None:
    image = await fetch_image(
        internet.http, "https://public.test/avatar.png?s=96", allow_private=False, resolve=DNS
    )
    assert image.content == PNG
    assert internet.backend.connected == [PUBLIC_IP]
    assert internet.server.sni == ["public.test"]
    (seen,) = internet.server.requests
    assert (seen.target, seen.headers["host"]) == ("/avatar.png?s=96", "public.test")


async def test_the_certificate_is_verified_against_the_name_not_the_ip(
    internet: Internet,
) -> None:
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(
            internet.http, "https://other.test/avatar.png", allow_private=False, resolve=DNS
        )
    assert refused.value.reason.startswith("transport error")
    assert internet.backend.connected == [PUBLIC_IP]
    assert internet.server.requests == []


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://internal.test/avatar.png", "address not allowed"),
        (f"https://{INTERNAL_IP}/avatar.png", "address not allowed"),
        ("http://public.test/avatar.png", "scheme 'http' not allowed"),
    ],
)
async def test_every_redirect_hop_is_checked_again(
    internet: Internet, location: str, reason: str
) -> None:
    # The routed network would carry the second hop too (10.0.0.1 leads to the same server,
    # whose certificate covers it): only the per-hop check stops it.
    url = str(httpx2.URL("https://public.test/to", params={"location": location}))
    with pytest.raises(FetchRefused) as refused:
        await fetch_image(internet.http, url, allow_private=False, resolve=DNS)
    assert refused.value.reason == reason
    assert internet.backend.connected == [PUBLIC_IP]
    assert [seen.target.split("?")[0] for seen in internet.server.requests] == ["/to"]


async def test_a_redirect_to_another_public_host_is_followed_to_its_own_checked_ip(
    internet: Internet,
) -> None:
    location = "https://cdn.public.test/avatar.png"
    url = str(httpx2.URL("https://public.test/to", params={"location": location}))
    image = await fetch_image(internet.http, url, allow_private=False, resolve=DNS)
    assert image.content == PNG
    assert internet.backend.connected == [PUBLIC_IP, OTHER_PUBLIC_IP]
    assert internet.server.sni == ["public.test", "cdn.public.test"]
