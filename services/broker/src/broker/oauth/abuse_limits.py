"""Abuse limits: failed client authentications and login starts, counted per source address.

docs/security.md "Abuse limits". Every count lives in a fixed window of ``abuse_window``
seconds (``shared.window_counters``: Redis when configured, else this process); a limit of 0 is
off.

**Client authentication** (``/token``, ``/revoke``, ``/introspect``, ``POST
/auth/oauth2/refresh``) counts each failure — unknown client, wrong secret, malformed
credentials, a client assertion that fails its checks or was used before — three ways:

- per (client, address): past ``client_auth_failure_limit`` that address may not try that
  client again this window. A brute force meets this limit first, and the client's own servers,
  at their own addresses, never notice it.
- per address, any client: past ``client_auth_address_failure_limit`` the address may not
  authenticate any client this window (guessing across client ids).
- per client, any address: past ``client_auth_client_failure_limit`` (guesses spread over many
  addresses), every address that has failed for the client this window waits for the next one,
  while an address with no failure still has its secret checked. So the right secret from a
  fresh address — the client's own servers — keeps working; a plain per-client lockout would
  let anyone who knows a client id take that client offline.

A throttled request gets 429 ``temporarily_unavailable`` with ``Retry-After`` before its
credentials are compared, the same answer whatever secret it carries, so the throttle is no
oracle for the secret. Only failures count: the right secret costs one read of the counters.
A request with two authentication methods (``invalid_request``) is malformed, not a guess, and
is not counted. The request whose failure reaches a limit writes one ``client.auth_throttled``
audit row: a counter reaches its limit once per window, so however many requests are refused
afterwards, the audit table gets one row per key and window. (The counters are read before
the secret is compared and added to after, so concurrent guesses may pass a limit by as many
as are in flight at once; the audit still happens once.) What an address shares, it shares
whole: behind one NAT, a client instance with a stale secret throttles a correct one there.

**Login starts** (``GET/POST /authorize``, ``GET /auth/oauth2/{provider}/login``, the link start
``GET /auth/oauth2/{provider}/link``) are counted per address only when they are about to write a
``login_states`` row, i.e. validated and with a provider chosen: that is what fills the table,
and a request that fails validation gets an error page or redirect that stores nothing, as
does the provider chooser. Past ``login_start_limit``: a 429 page with ``Retry-After``. The
dashboard's sign-in start stores nothing itself; it sends the browser to ``/authorize``, where
it is counted.

The address is ``request.client.host`` (uvicorn applies ``X-Forwarded-For`` from trusted proxies);
an IPv6 address counts as its /64, which one host or customer usually holds whole. A request
without an address (a Unix socket with no proxy in front) is not counted. The counters fail
open: when Redis is down nothing is throttled and a warning is logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from shared.audit import record_audit_core
from shared.clock import rfc3339
from shared.runtime import Runtime
from shared.settings import ClientConfig, Settings
from shared.window_counters import Window
from starlette.requests import Request

from broker.http.errors import InvalidClient, TooManyRequests
from broker.oauth.client_assertions import assertion_audiences, record_assertion
from broker.oauth.clients import Credentials, presented_credentials, verify_client

PAIR = "client_address"
ADDRESS = "address"
CLIENT = "client"
THROTTLED_ACTION = "client.auth_throttled"

log = structlog.get_logger("broker.abuse_limits")


def source_address(request: Request) -> str | None:
    """The address a request is counted under: IPv4 as is, IPv6 as its /64."""
    host = request.client.host if request.client else None
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class _Counter:
    scope: str
    key: str
    limit: int


def _failure_counters(
    settings: Settings, window: Window, address: str, client_id: str | None
) -> list[_Counter]:
    """The counters a failure adds to; the client's two only for a registered client (an
    unknown id is a guess at the address's expense, and must not mint keys)."""
    prefix = f"{settings.abuse_key_prefix}:client_auth:{window.seconds}:{window.number}"
    counters = [
        _Counter(ADDRESS, f"{prefix}:address:{address}", settings.client_auth_address_failure_limit)
    ]
    if client_id is not None:  # client ids never contain ':' (ClientConfig.id)
        counters += [
            _Counter(
                PAIR, f"{prefix}:pair:{client_id}:{address}", settings.client_auth_failure_limit
            ),
            _Counter(
                CLIENT, f"{prefix}:client:{client_id}", settings.client_auth_client_failure_limit
            ),
        ]
    return counters


def _throttled_by(counters: Sequence[_Counter], counts: Sequence[int]) -> str | None:
    """Which limit holds this request off, if any (see the module docstring)."""
    seen = {
        counter.scope: (counter.limit, count)
        for counter, count in zip(counters, counts, strict=True)
    }
    for scope in (ADDRESS, PAIR):
        limit, count = seen.get(scope, (0, 0))
        if limit and count >= limit:
            return scope
    limit, count = seen.get(CLIENT, (0, 0))
    if limit and count >= limit and seen[PAIR][1] > 0:
        return CLIENT
    return None


def _public_and_secretless(settings: Settings, credentials: Credentials | None) -> bool:
    if credentials is None or credentials.method != "none":
        return False
    client = settings.client(credentials.client_id)
    return client is not None and client.is_public


def _limits_client_auth(settings: Settings) -> bool:
    return bool(
        settings.client_auth_failure_limit
        or settings.client_auth_address_failure_limit
        or settings.client_auth_client_failure_limit
    )


async def _verified(runtime: Runtime, credentials: Credentials) -> ClientConfig:
    """``broker.oauth.clients.verify_client``, then an assertion's ``jti`` spent (a replayed
    assertion is ``InvalidClient``, counted like a wrong secret)."""
    settings = runtime.settings
    authenticated = verify_client(
        settings,
        credentials,
        now=runtime.clock.now(),
        audiences=assertion_audiences(settings),
    )
    if authenticated.assertion is not None:
        await record_assertion(runtime.engine, authenticated.assertion)
    return authenticated.client


async def authenticate(
    runtime: Runtime, request: Request, params: Mapping[str, str]
) -> ClientConfig:
    """Client authentication (``broker.oauth.clients``) behind the failure limits: the client,
    or ``TooManyRequests`` (429), ``InvalidClient`` (401), ``InvalidRequest`` (400)."""
    settings = runtime.settings
    authorization = request.headers.get("authorization")
    address = source_address(request)
    credentials: Credentials | None = None
    failure: InvalidClient | None = None
    try:
        credentials = presented_credentials(authorization, params)
    except InvalidClient as exc:  # malformed HTTP Basic: counted like a wrong secret
        failure = exc
    if (
        address is None
        or not _limits_client_auth(settings)
        or _public_and_secretless(settings, credentials)
    ):
        # A public client presenting no secret has nothing to guess: no counter is read (its
        # refreshes stay off the counter store).
        if failure is not None:
            raise failure
        assert credentials is not None
        return await _verified(runtime, credentials)
    window = Window.at(runtime.clock.now(), settings.abuse_window)
    client_id = None
    if credentials is not None and settings.client(credentials.client_id) is not None:
        client_id = credentials.client_id
    counters = _failure_counters(settings, window, address, client_id)
    counts = await runtime.abuse_counters.read([counter.key for counter in counters])
    if _throttled_by(counters, counts) is not None:
        # Before the secret is compared: the same answer, right secret or wrong.
        raise TooManyRequests(
            "too many failed client authentications; retry later",
            retry_after=window.retry_after,
        )
    if failure is None:
        assert credentials is not None
        try:
            return await _verified(runtime, credentials)
        except InvalidClient as exc:
            failure = exc
    await _count_failure(runtime, window, address, client_id, counters)
    raise failure


async def _count_failure(
    runtime: Runtime,
    window: Window,
    address: str,
    client_id: str | None,
    counters: Sequence[_Counter],
) -> None:
    """Add the failure; audit each limit this very failure reached (once per key and window:
    the count passes each value once)."""
    counts = await runtime.abuse_counters.add(
        [counter.key for counter in counters], ttl=window.seconds
    )
    reached = [
        counter
        for counter, count in zip(counters, counts, strict=True)
        if counter.limit and count == counter.limit
    ]
    if not reached:
        return
    now = runtime.clock.now()
    until = dt.datetime.fromtimestamp((window.number + 1) * window.seconds, dt.UTC)
    async with runtime.engine.begin() as connection:
        for counter in reached:
            log.warning(
                "client_auth.throttled",
                scope=counter.scope,
                client_id=client_id,
                ip=address,
                limit=counter.limit,
            )
            await record_audit_core(
                connection,
                action=THROTTLED_ACTION,
                actor="anonymous",
                subject=None,
                client_id=client_id if counter.scope != ADDRESS else None,
                ip=address,
                data={
                    "scope": counter.scope,
                    "failures": counter.limit,
                    "window_seconds": window.seconds,
                    "until": rfc3339(until),
                },
                now=now,
            )


async def login_start_refused(runtime: Runtime, request: Request) -> int | None:
    """Count a login start from the request's address: ``Retry-After`` seconds when it is
    over ``login_start_limit``, else None (go ahead and write the login state)."""
    settings = runtime.settings
    limit = settings.login_start_limit
    address = source_address(request)
    if not limit or address is None:
        return None
    window = Window.at(runtime.clock.now(), settings.abuse_window)
    key = f"{settings.abuse_key_prefix}:login_start:{window.seconds}:{window.number}:{address}"
    [count] = await runtime.abuse_counters.add([key], ttl=window.seconds)
    if count <= limit:
        return None
    if count == limit + 1:  # logged once per address and window
        log.warning("login.start_throttled", ip=address, limit=limit)
    return window.retry_after
