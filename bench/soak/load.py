"""The soak's client mix: browsers signing in through the upstream stand-in, relying parties
refreshing (some racing themselves with one token), reading userinfo, introspecting and
signing out, and an admin reading the admin listings; at a steady rate, every request recorded
in the :class:`~bench.soak.ledger.Ledger`.

Clients behave as real ones do: a refresh that got no answer (the connection dropped) or a
503 is tried again with the same token, a little later; an ``invalid_grant`` ends the session
for the client, which signs in again later. Every operation is bounded in time, and the whole
load in count (``rate`` times the duration).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from bench.soak.ledger import Exchange, Ledger, LoginRecord, Presentation, SessionRecord
from bench.soak.processes import (
    ADMIN_CLIENT,
    ADMIN_REDIRECT,
    INTROSPECTING_CLIENT,
    INTROSPECTING_SECRET,
    PROVIDER,
    USER_CLIENT,
    USER_REDIRECT,
)

REQUEST_TIMEOUT = httpx2.Timeout(15.0, connect=3.0)
USER_SCOPE = "openid email profile offline_access"
ADMIN_SCOPE = f"{USER_SCOPE} admin"
ADMIN_SUBJECT = "soak-admin"
RETRY_ATTEMPTS = 8  # presentations of one token in one refresh operation, at most
RETRY_SECONDS = 30.0  # and for at most this long
ADMIN_LISTINGS = (
    "/admin/oauth2/users?limit=20",
    "/admin/oauth2/tokens?limit=20",
    "/admin/oauth2/audit?limit=20",
    "/admin/oauth2/stats",
)
# What the mix draws from (weights), once enough sessions are live.
MIX = {
    "refresh": 26,
    "refresh_api": 6,
    "refresh_race": 2,
    "userinfo": 26,
    "introspect": 20,
    "admin": 6,
    "login": 8,
    "logout": 3,
}


def upstream_user(subject: str) -> dict[str, Any]:
    """The upstream's claims for a user; no ``picture``: the broker would fetch it."""
    name = subject.removeprefix("soak-")
    return {
        "sub": subject,
        "email": f"{name}@soak.test",
        "email_verified": True,
        "name": f"Soak {name}",
        "preferred_username": name,
    }


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _claims(jwt: str) -> dict[str, Any]:
    """A JWT's payload, unverified (the load only needs ``sid`` and ``sub``)."""
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _oauth_error(response: httpx2.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


@dataclass
class LiveSession:
    """A session the load holds: its tokens, and a flag so one operation uses it at a time."""

    record: SessionRecord
    access_token: str
    refresh_token: str
    busy: bool = False

    @property
    def sid(self) -> str:
        return self.record.sid


@dataclass
class LoadOptions:
    rate: float = 20.0  # operations per second
    sessions: int = 24  # live user sessions the mix keeps around
    users: int = 12  # upstream users they belong to
    max_in_flight: int = 48
    max_logins: int = 6  # sign-ins in flight at once, at most
    reuse_interval: int = 0  # the brokers' BROKER_REFRESH_REUSE_INTERVAL


@dataclass
class Load:
    issuer: str
    upstream: str
    ledger: Ledger
    options: LoadOptions
    rng: random.Random = field(default_factory=random.Random)
    sessions: list[LiveSession] = field(default_factory=list)
    admin: LiveSession | None = None
    _transport: httpx2.AsyncHTTPTransport | None = None
    _http: httpx2.AsyncClient | None = None
    _control: httpx2.AsyncClient | None = None
    _upstream_user: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _admin_login: asyncio.Task[None] | None = None
    _logins: int = 0  # user sign-ins in flight

    async def __aenter__(self) -> Load:
        # One connection per request: the proxy balances connections, so requests alternate.
        limits = httpx2.Limits(max_connections=256, max_keepalive_connections=0)
        self._transport = httpx2.AsyncHTTPTransport(limits=limits)
        self._http = self._client()
        self._control = httpx2.AsyncClient(base_url=self.upstream, timeout=10.0, trust_env=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._http is not None and self._control is not None
        await self._http.aclose()
        await self._control.aclose()

    def _client(self) -> httpx2.AsyncClient:
        """A client over the shared transport; each browser gets its own (its own cookies)."""
        return httpx2.AsyncClient(
            transport=self._transport, timeout=REQUEST_TIMEOUT, trust_env=False
        )

    @property
    def http(self) -> httpx2.AsyncClient:
        assert self._http is not None
        return self._http

    # ------------------------------------------------------------------ one request

    async def call(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        client: httpx2.AsyncClient | None = None,
        **kwargs: Any,
    ) -> tuple[httpx2.Response | None, Exchange]:
        """One request to the broker, recorded whatever happens."""
        started = time.time()
        try:
            response = await (client or self.http).request(method, url, **kwargs)
        except httpx2.TransportError as exc:
            exchange = Exchange(kind, started, time.time(), None, type(exc).__name__)
            self.ledger.exchanges.append(exchange)
            return None, exchange
        error = _oauth_error(response) if response.status_code >= 400 else None
        exchange = Exchange(kind, started, time.time(), response.status_code, error)
        self.ledger.exchanges.append(exchange)
        return response, exchange

    # ------------------------------------------------------------------ sign-in

    async def login(
        self,
        subject: str,
        *,
        client_id: str = USER_CLIENT,
        admin: bool = False,
        expect_admin: bool = True,
    ) -> LiveSession | None:
        """The code flow through the upstream stand-in, as a browser and a public client;
        ``admin``: through the admin console, asking for the ``admin`` scope."""
        redirect_uri = ADMIN_REDIRECT if admin else USER_REDIRECT
        started = time.time()
        verifier, challenge = _pkce()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": ADMIN_SCOPE if admin else USER_SCOPE,
            "state": state,
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "provider": PROVIDER,
        }
        browser = self._client()

        def failed(step: str, detail: str | None) -> LiveSession | None:
            self.ledger.logins.append(LoginRecord(started, time.time(), False, step, detail))
            return None

        response, _ = await self.call(
            "login", "GET", f"{self.issuer}/authorize", params=params, client=browser
        )
        if response is None or response.status_code != 302:
            return failed("authorize", None if response is None else str(response.status_code))
        upstream_url = response.headers["location"]
        if not upstream_url.startswith(self.upstream):
            return failed("authorize", "not sent upstream")
        # The stand-in issues codes for the user set last: one sign-in at a time there.
        async with self._upstream_user:
            assert self._control is not None
            try:
                await self._control.post("/_control/user", json=upstream_user(subject))
                upstream = await browser.get(upstream_url)
            except httpx2.TransportError as exc:
                return failed("upstream", type(exc).__name__)
        if upstream.status_code != 302:
            return failed("upstream", str(upstream.status_code))
        response, _ = await self.call("login", "GET", upstream.headers["location"], client=browser)
        if response is None or response.status_code != 302:
            return failed("callback", None if response is None else str(response.status_code))
        back = response.headers["location"]
        query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        if not back.startswith(redirect_uri) or "code" not in query or query.get("state") != state:
            return failed("callback", query.get("error", "no code"))
        response, exchange = await self.call(
            "login",
            "POST",
            f"{self.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": client_id,
            },
        )
        if response is None or response.status_code != 200:
            return failed("token", exchange.error or str(exchange.status))
        body = response.json()
        claims = _claims(body["access_token"])
        if admin and expect_admin and "admin" not in body.get("scope", "").split():
            exchange.unexpected = "no admin scope"
        record = SessionRecord(
            sid=claims["sid"],
            user_id=claims["sub"],
            upstream_subject=subject,
            client_id=client_id,
            admin=admin,
            tokens=[body["refresh_token"]],
        )
        self.ledger.sessions[record.sid] = record
        self.ledger.logins.append(LoginRecord(started, time.time(), True, "done", sid=record.sid))
        return LiveSession(record, body["access_token"], body["refresh_token"])

    async def login_user(self) -> None:
        subject = f"soak-user-{self.rng.randrange(self.options.users):02d}"
        self._logins += 1
        try:
            session = await self.login(subject)
        finally:
            self._logins -= 1
        if session is not None:
            self.sessions.append(session)

    async def login_admin(self) -> LiveSession | None:
        session = await self.login(ADMIN_SUBJECT, client_id=ADMIN_CLIENT, admin=True)
        if session is not None and self.admin is None:
            self.admin = session
        return session

    # ------------------------------------------------------------------ refresh

    async def present(self, session: LiveSession, token: str, kind: str) -> Presentation:
        """One presentation of ``token``: at ``/token``, or the first-party refresh API."""
        if kind == "refresh_api":
            body = {"refresh_token": token, "client_id": session.record.client_id}
            response, exchange = await self.call(
                kind, "POST", f"{self.issuer}/auth/oauth2/refresh", json=body
            )
        else:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": session.record.client_id,
            }
            response, exchange = await self.call(kind, "POST", f"{self.issuer}/token", data=form)
        presentation = Presentation(
            token,
            session.sid,
            exchange.started,
            exchange.ended,
            exchange.status,
            exchange.error,
            race=kind == "refresh_race",
        )
        if response is not None and response.status_code == 200:
            body = response.json()
            presentation.successor = body["refresh_token"]
            session.access_token = body["access_token"]
        self.ledger.present(presentation)
        return presentation

    def _rotated(self, session: LiveSession, successor: str) -> None:
        session.refresh_token = successor
        if session.record.tokens[-1] != successor:
            session.record.tokens.append(successor)

    def end(self, session: LiveSession, why: str) -> None:
        session.record.ended = why
        if session in self.sessions:
            self.sessions.remove(session)
        if session is self.admin:
            self.admin = None

    async def refresh(self, session: LiveSession, kind: str = "refresh") -> None:
        """Rotate the session's refresh token; without an answer (or on a 503), try the same
        token again a little later, as a client does."""
        token = session.refresh_token
        deadline = time.monotonic() + RETRY_SECONDS
        for _ in range(RETRY_ATTEMPTS):
            presentation = await self.present(session, token, kind)
            if presentation.successor is not None:
                self._rotated(session, presentation.successor)
                return
            status = presentation.status
            if status is not None and status < 500:
                if presentation.error == "invalid_grant":
                    self.end(session, "refused")
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.5 if status is None else 1.0)

    async def race(self, session: LiveSession) -> None:
        """Two presentations of one token at once (two tabs): with a reuse interval of 0 one
        wins and the other is a replay that revokes the session, so the client drops it."""
        session.record.raced = True
        token = session.refresh_token
        first, second = await asyncio.gather(
            self.present(session, token, "refresh_race"),
            self.present(session, token, "refresh_race"),
        )
        successors = {p.successor for p in (first, second) if p.successor is not None}
        if self.options.reuse_interval > 0 and len(successors) == 1 and first.successor:
            self._rotated(session, first.successor)  # both got the same successor: go on
        else:
            self.end(session, "race")

    # ------------------------------------------------------------------ reads and sign-out

    async def userinfo(self, session: LiveSession) -> None:
        headers = {"Authorization": f"Bearer {session.access_token}"}
        response, exchange = await self.call(
            "userinfo", "GET", f"{self.issuer}/userinfo", headers=headers
        )
        if response is None or response.status_code >= 500:
            return
        if response.status_code != 200:
            exchange.unexpected = f"userinfo {response.status_code} for a live session"
            self.end(session, "refused")
        elif response.json().get("sub") != session.record.user_id:
            exchange.unexpected = "userinfo of another user"

    async def introspect(self, session: LiveSession) -> None:
        response, exchange = await self.call(
            "introspect",
            "POST",
            f"{self.issuer}/introspect",
            data={"token": session.access_token},
            auth=(INTROSPECTING_CLIENT, INTROSPECTING_SECRET),
        )
        if response is None or response.status_code >= 500:
            return
        if response.status_code != 200 or response.json().get("active") is not True:
            exchange.unexpected = f"introspection {response.status_code} inactive"
            self.end(session, "refused")

    async def admin_listing(self, session: LiveSession) -> None:
        path = self.rng.choice(ADMIN_LISTINGS)
        headers = {"Authorization": f"Bearer {session.access_token}"}
        response, exchange = await self.call(
            "admin", "GET", f"{self.issuer}{path}", headers=headers
        )
        if response is not None and response.status_code < 500 and response.status_code != 200:
            exchange.unexpected = f"admin listing {response.status_code}"
            self.end(session, "refused")

    async def logout(self, session: LiveSession) -> None:
        headers = {"Authorization": f"Bearer {session.access_token}"}
        session.record.logged_out = True  # asked for, whether or not the answer arrives
        response, exchange = await self.call(
            "logout", "DELETE", f"{self.issuer}/auth/oauth2/revoke", headers=headers
        )
        if response is not None and response.status_code == 200:
            self.end(session, "logout")
        elif response is not None and response.status_code < 500:
            exchange.unexpected = f"revoke {response.status_code}"
            self.end(session, "refused")

    # ------------------------------------------------------------------ the steady rate

    def _idle(self, *, admin: bool = False) -> LiveSession | None:
        if admin:
            return self.admin if self.admin is not None and not self.admin.busy else None
        idle = [session for session in self.sessions if not session.busy]
        return self.rng.choice(idle) if idle else None

    def _operation(self) -> tuple[str, LiveSession | None]:
        mix = dict(MIX)
        if len(self.sessions) < self.options.sessions // 2:
            mix["login"] = sum(MIX.values())  # half of the operations sign in, to refill
            mix["logout"] = 0
        if self._logins >= self.options.max_logins:
            mix["login"] = 0
        kinds, weights = zip(*mix.items(), strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "login" and len(self.sessions) >= self.options.sessions:
            kind = "logout"
        if kind == "login":
            return kind, None
        if kind == "admin":
            return kind, self._idle(admin=True)
        if kind == "refresh" and self.rng.random() < 0.05:  # the admin's session rotates too
            return kind, self._idle(admin=True) or self._idle()
        return kind, self._idle()

    async def _run(self, kind: str, session: LiveSession | None) -> None:
        operations: dict[str, Callable[[LiveSession], Awaitable[None]]] = {
            "refresh": self.refresh,
            "refresh_api": lambda s: self.refresh(s, "refresh_api"),
            "refresh_race": self.race,
            "userinfo": self.userinfo,
            "introspect": self.introspect,
            "admin": self.admin_listing,
            "logout": self.logout,
        }
        if session is None:
            await self.login_user()
            return
        try:
            await operations[kind](session)
        finally:
            session.busy = False

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def burst(self, count: int, spread: float) -> int:
        """Start up to ``count`` refreshes (of idle sessions) spread evenly over ``spread``
        seconds; how many."""
        idle = [session for session in self.sessions if not session.busy][:count]

        async def later(delay: float, session: LiveSession) -> None:
            await asyncio.sleep(delay)
            await self._run("refresh", session)

        for index, session in enumerate(idle):
            session.busy = True
            self._spawn(later(index * spread / max(1, len(idle)), session))
        return len(idle)

    async def _relogin_admin(self) -> None:
        await self.login_admin()

    async def drive(self, stop: asyncio.Event, limit: float) -> None:
        """Start operations at ``rate`` per second until ``stop`` is set (or ``limit`` seconds
        have passed); then wait (bounded) for the ones in flight."""
        loop = asyncio.get_running_loop()
        interval, next_at = 1.0 / self.options.rate, loop.time()
        end = next_at + limit
        while next_at < end and not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            if self.admin is None and (self._admin_login is None or self._admin_login.done()):
                self._admin_login = self._spawn(self._relogin_admin())
            if len(self._tasks) >= self.options.max_in_flight:
                self.ledger.shed += 1
                continue
            kind, session = self._operation()
            if kind != "login" and session is None:
                self.ledger.idle += 1
                continue
            if session is not None:
                session.busy = True  # taken now, before another tick can draw it
            self._spawn(self._run(kind, session))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=RETRY_SECONDS + 30)
