"""``bench.scale``'s load: the refresh grant and introspection under wrk, with the seeded tokens.

The refresh grant presents the current tokens of seeded live sessions of the public client
``web`` (``bench.seeded_tokens``), in random order, one request per token. Where there are fewer
live sessions than the run needs (the small sizes), the file goes on with each session's
successor, then the successor's successor...: a successor is what the broker derives from the
token it rotates (``shared.refresh_rotation``), which the bench can derive too since it made the
broker's keyring. Each session's next token is a whole pass of the sessions later in the file,
long after its predecessor was rotated.

Some tokens of a run are never rotated by it: wrk calls ``request()`` once to check the script
before it starts (the run's first token taken, no request sent), and a request still queued in
the broker when wrk ends the run and closes its connection is dropped before the broker reads
its body (the ASGI server answers the read with a disconnect). Their successors later in the
file would be unknown, so the bench presents them itself, outside the measurement
(``ChainedSupply``): the first token before each run, the unrotated ones after it.

Introspection cycles through the current tokens of live sessions of ``cli``, which the scale
bench configures as a confidential client so it may introspect its own refresh tokens: each
request looks a different token up, over the whole table, as resource servers would.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import httpx2
import psycopg
from shared.crypto.opaque import token_hash
from shared.refresh_rotation.policy import RotationPolicy
from shared.settings import load_settings

from bench.cpu_share import CpuShare
from bench.database import libpq_url
from bench.processes import BenchError
from bench.rounds import Measurement, Rounds, Target, measure_all
from bench.seeded_tokens import current_tokens, live_sessions
from bench.servers import Broker
from bench.token_supply import TokenSupply
from bench.wrk import WrkResult

REFRESH_CLIENT = "web"  # public: the grant needs only client_id
INTROSPECTOR = "cli"  # confidential in the scale bench's configuration
INTROSPECTOR_SECRET = "bench-scale-cli-secret-0123456789abcdef"
INTROSPECT_SCRIPT = Path(__file__).resolve().parent / "introspect.lua"
MAX_RATE = 4_000  # refreshes/s the token file is sized for
INTROSPECTION_TOKENS = 20_000
# A token must outlive the run; a session's next token in the file must come well after its
# predecessor was answered: a pass over this many sessions takes the broker about a second.
ALIVE_FOR = dt.timedelta(hours=2)
MIN_SESSIONS_PER_PASS = 1_000


class ChainedSupply(TokenSupply):
    """The token file with successors after the seeded tokens. The tokens wrk takes without
    rotating them are presented here, unmeasured, so their successors are valid when their turn
    comes: the run's first one before it starts, any other left unrotated after it."""

    def __init__(
        self, path: Path, tokens: list[str], client_id: str, issuer: str, database_url: str
    ) -> None:
        super().__init__(path, len(tokens), client_id)
        self.tokens = tokens
        self.issuer = issuer
        self.database_url = database_url
        self.represented = 0

    def run(self, url: str, duration: int, connections: int) -> WrkResult | None:
        start = self.offset
        # wrk's check of the script takes this one without sending it.
        self.represented += self._present_unrotated(self.tokens[start : start + 1])
        result = super().run(url, duration, connections)
        if result is not None:
            self.represented += self._present_unrotated(self.tokens[start : self.offset])
        return result

    def _present_unrotated(self, tokens: list[str]) -> int:
        hashes = {token_hash(token): token for token in tokens}
        with psycopg.connect(libpq_url(self.database_url)) as connection:
            rows = connection.execute(
                "SELECT token_hash FROM refresh_tokens WHERE token_hash = ANY(%s) "
                "AND used_at IS NULL",
                (list(hashes),),
            ).fetchall()
        for (stored,) in rows:
            response = httpx2.post(
                f"{self.issuer}/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": hashes[bytes(stored)],
                    "client_id": self.client_id,
                },
                timeout=30,
            )
            if response.status_code != 200:
                raise BenchError(f"a dropped refresh token failed again: {response.text}")
        return len(rows)


@dataclass(frozen=True)
class Load:
    """What the scale bench measured under load at one size."""

    refresh: Measurement
    introspection: Measurement
    cpu: CpuShare
    supply: ChainedSupply
    live_sessions: int  # live sessions of the refresh client the tokens were drawn from
    token_passes: int  # 1: each request a seeded token; more: successors too
    updates_before: tuple[int, int]  # refresh_token_updates() when the load began


def refresh_supply(
    workdir: Path, database_url: str, token_seed: str, broker: Broker, rounds: Rounds
) -> tuple[ChainedSupply, int, int]:
    """The token file for the refresh grant; also how many live sessions it draws from and how
    many passes over them it holds."""
    needed = MAX_RATE * (rounds.warmup + rounds.repeats * rounds.duration)
    alive_until = dt.datetime.now(dt.UTC) + ALIVE_FOR
    sessions = live_sessions(
        database_url, token_seed, REFRESH_CLIENT, alive_until=alive_until, limit=needed
    )
    if not sessions:
        raise BenchError(f"the seed has no live session of {REFRESH_CLIENT!r}: seed more sessions")
    passes = math.ceil(needed / len(sessions))
    if passes > 1 and len(sessions) < MIN_SESSIONS_PER_PASS:
        print(
            f"  WARNING: only {len(sessions)} live sessions: a successor may be presented before "
            "its predecessor was rotated, which fails it and the rest of its chain; seed more "
            "sessions"
        )
    settings = load_settings(dict(broker.env))
    policy = RotationPolicy.build(
        settings.keyring,
        refresh_ttl=settings.refresh_token_ttl,
        reuse_interval=settings.refresh_reuse_interval,
    )
    tokens = current_tokens(token_seed, sessions)
    chained = list(tokens)
    for _ in range(passes - 1):
        tokens = [policy.successor(token) for token in tokens]
        chained += tokens
    path = workdir / "refresh-tokens.txt"
    path.write_text("".join(f"{token}\n" for token in chained), encoding="ascii")
    supply = ChainedSupply(path, chained, REFRESH_CLIENT, broker.issuer, database_url)
    return supply, len(sessions), passes


def introspection_target(workdir: Path, database_url: str, token_seed: str, issuer: str) -> Target:
    """Introspection by ``cli`` of its own live refresh tokens, in turn."""
    alive_until = dt.datetime.now(dt.UTC) + ALIVE_FOR
    sessions = live_sessions(
        database_url, token_seed, INTROSPECTOR, alive_until=alive_until, limit=INTROSPECTION_TOKENS
    )
    if not sessions:
        raise BenchError(f"the seed has no live session of {INTROSPECTOR!r}: seed more sessions")
    path = workdir / "introspection-tokens.txt"
    path.write_text("".join(f"{t}\n" for t in current_tokens(token_seed, sessions)), "ascii")
    credentials = base64.b64encode(f"{INTROSPECTOR}:{INTROSPECTOR_SECRET}".encode()).decode()
    return Target(
        "introspect",
        "broker introspection",
        f"{issuer}/introspect",
        script=INTROSPECT_SCRIPT,
        script_args=(str(path), credentials),
    )


def refresh_token_updates(database_url: str) -> tuple[int, int]:
    """``refresh_tokens``' updates so far, and how many of them were HOT (no index written):
    a rotation's ``SET used_at`` is HOT while no index covers ``used_at`` and its page has room.
    A backend publishes its counts when its transaction ends, at most once a second, and when
    it exits: read them after the broker stopped."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'refresh_tokens'"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def measure_load(
    workdir: Path, database_url: str, token_seed: str, broker: Broker, rounds: Rounds
) -> Load:
    """The refresh grant and introspection, warmed up, then in turn for ``rounds.repeats``."""
    updates_before = refresh_token_updates(database_url)
    supply, sessions, passes = refresh_supply(workdir, database_url, token_seed, broker, rounds)
    print(
        f"refresh grant: {supply.total:,} tokens of {sessions:,} live sessions of "
        f"{REFRESH_CLIENT!r}" + (f", then their successors ({passes} passes)" if passes > 1 else "")
    )
    cpu = CpuShare(broker.server.process.pid)
    refresh = Target(
        "refresh", "broker refresh grant", f"{broker.issuer}/token", supply=supply, cpu=cpu
    )
    introspection = introspection_target(workdir, database_url, token_seed, broker.issuer)
    measured = measure_all([refresh, introspection], rounds)
    if supply.represented:
        print(
            f"  {supply.represented} refresh tokens taken by wrk but never rotated (its check of "
            "the script, requests dropped at the end of a run) were presented again, unmeasured"
        )
    return Load(
        measured["refresh"], measured["introspect"], cpu, supply, sessions, passes, updates_before
    )
