"""The fault schedule: one fault after another while the load runs, each timed from the moment
it is injected until the service answers again (its recovery), and a supervisor that restarts
a process that died on its own (as an orchestrator would) and says so.

The faults, in order: SIGKILL one broker and start it again 10 s later; restart PostgreSQL
(``pg_ctl restart -m fast``); stop Redis for 30 s; the upstream answers 503 for 30 s, then
answers everything 2 s late for 30 s; SIGKILL a sync-worker while it is in the middle of an
upstream refresh (the stand-in holds that one refresh with a ``hang`` fault, so the kill is
known to land mid-job), and start it again 10 s later. ``Timing.scaled`` shrinks every window
for the short and ci schedules (the 2 s delay stays 2 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
import psycopg

from bench.soak.cluster import Cluster
from bench.soak.load import Load
from bench.soak.processes import AUDIT_STREAM, Service, Services

POLL = 0.2
SLOW_DELAY = 2.0  # seconds the slow upstream takes per answer
HUNG_REFRESH_SECONDS = 600.0  # the held refresh waits for its client this long, at most
PROBE_SUBJECT = "soak-probe"
# A broker is killed while refreshes are arriving one every millisecond or so: some are cut
# before their commit, some between their commit and their answer.
KILL_BURST = 24  # refreshes, at most
KILL_SPREAD = 0.030  # seconds over which they start; the kill comes at the end
# The supervisor restarts a process that died on its own after 1, 2, 4, 8 s (then every 8 s),
# like an orchestrator's crash-loop back-off, shorter; a process that ran 30 s starts over.
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0)
STABLE_AFTER = 30.0
MAX_RESTARTS = 60  # per process


@dataclass(frozen=True)
class Timing:
    """The schedule's durations, in seconds."""

    broker_down: float = 10.0
    redis_down: float = 30.0
    upstream_unavailable: float = 30.0
    upstream_slow: float = 30.0
    worker_down: float = 10.0
    warmup: float = 20.0
    gap: float = 15.0  # quiet time after one fault's recovery before the next
    tail: float = 20.0  # load after the last recovery
    recovery_limit: float = 120.0  # a fault not recovered by then is reported as such
    job_timeout: float = 20.0  # sync-worker --job-timeout: a killed job runs again 10 s later

    @classmethod
    def scaled(cls, factor: float) -> Timing:
        base = cls()
        return cls(
            broker_down=base.broker_down * factor,
            redis_down=base.redis_down * factor,
            upstream_unavailable=base.upstream_unavailable * factor,
            upstream_slow=base.upstream_slow * factor,
            worker_down=base.worker_down * factor,
            warmup=base.warmup * factor,
            gap=base.gap * factor,
            tail=base.tail * factor,
            recovery_limit=max(60.0, base.recovery_limit * factor),
            # Not shorter than a refresh can take upstream (provider slot + a slow answer): a
            # job cancelled after the upstream rotated would lose the rotated token.
            job_timeout=max(15.0, base.job_timeout * factor),
        )

    def busy_seconds(self) -> list[float]:
        """About how long each fault keeps the schedule busy (injection to recovery)."""
        return [
            self.broker_down + 5,
            5.0,
            self.redis_down + 5,
            self.upstream_unavailable + self.upstream_slow + 5,
            self.job_timeout + 10 + 5,
        ]


@dataclass
class FaultRecord:
    name: str
    injected: float  # time.time()
    lifted: float | None = None  # the fault itself ended (process started again, ...)
    recovered: float | None = None  # everything answered again
    notes: list[str] = field(default_factory=list)

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.injected

    def window(self, grace: float, run_end: float) -> tuple[float, float]:
        """When requests count as "during the fault": until it recovered, plus ``grace``."""
        return self.injected, (self.recovered or run_end) + grace


@dataclass
class Event:
    at: float
    what: str


async def until(
    check: Callable[[], Awaitable[bool]], limit: float, poll: float = POLL
) -> float | None:
    """Poll ``check`` until it holds (the time.time() then) or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return time.time()
        await asyncio.sleep(poll)
    return None


def relay_covers(database_url: str, marker: tuple[int, int] | None) -> bool:
    """The audit relay's cursor has passed ``marker`` (txid, id): every row up to it is in
    the stream."""
    if marker is None:
        return True
    with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as connection:
        row = connection.execute(
            "SELECT last_txid, last_id FROM audit_relay_cursors WHERE stream = %s",
            (AUDIT_STREAM,),
        ).fetchone()
    return row is not None and (int(row[0]), int(row[1])) >= marker


def newest_audit_row(database_url: str) -> tuple[int, int] | None:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as connection:
        row = connection.execute(
            "SELECT txid, id FROM audit_actions ORDER BY txid DESC, id DESC LIMIT 1"
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def _links_all_ok(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as connection:
        row = connection.execute(
            "SELECT count(*) FROM oauth2_tokens WHERE state <> 'ok'"
        ).fetchone()
    return row is not None and int(row[0]) == 0


@dataclass
class Faults:
    cluster: Cluster
    services: Services
    load: Load
    timing: Timing
    http: httpx2.AsyncClient  # probes and the stand-in's control API
    records: list[FaultRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    held_down: set[str] = field(default_factory=set)  # stopped on purpose: not restarted
    restarts: dict[str, int] = field(default_factory=dict)  # unplanned, in all
    _crash_loop: dict[str, tuple[int, float]] = field(default_factory=dict)  # streak, exit seen
    _spawned: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers

    def _note(self, what: str) -> None:
        self.events.append(Event(time.time(), what))
        print(f"  [{time.strftime('%H:%M:%S')}] {what}", flush=True)

    async def _control(self, path: str, body: dict[str, object]) -> None:
        response = await self.http.post(f"{self.services.upstream_url}{path}", json=body)
        response.raise_for_status()

    async def _all_ready(self, services: list[Service]) -> bool:
        answers = await asyncio.gather(*(service.is_ready(self.http) for service in services))
        return all(answers)

    async def _probe_login(self, *, fast_within: float | None = None) -> bool:
        """One sign-in through the brokers (a probe user); ``fast_within``: it must also take
        no longer than that."""
        started = time.monotonic()
        session = await self.load.login(PROBE_SUBJECT)
        if session is None:
            return False
        return fast_within is None or time.monotonic() - started <= fast_within

    async def _thread(self, function: Callable[..., object], *args: object) -> object:
        return await asyncio.to_thread(function, *args)

    # ------------------------------------------------------------------ the schedule

    async def run(self, extra_gap: float) -> None:
        """Every fault in turn; ``extra_gap`` seconds of plain load after each."""
        await asyncio.sleep(self.timing.warmup)
        faults = (
            self.kill_broker,
            self.restart_postgres,
            self.stop_redis,
            self.upstream_outage,
            self.kill_worker,
        )
        for fault in faults:
            await fault()
            await asyncio.sleep(self.timing.gap + extra_gap)

    async def kill_broker(self) -> None:
        broker = self.services.brokers[0]
        record = FaultRecord(
            f"SIGKILL {broker.name}, started again {self.timing.broker_down:g} s later",
            time.time(),
        )
        self.records.append(record)
        self.held_down.add(broker.name)
        burst = self.load.burst(KILL_BURST, KILL_SPREAD)
        await asyncio.sleep(KILL_SPREAD)
        broker.kill()
        record.notes.append(f"killed as a burst of {burst} refreshes arrived")
        self._note(f"fault: {broker.name} killed (SIGKILL) during a burst of {burst} refreshes")
        await asyncio.sleep(self.timing.broker_down)
        broker.spawn()
        self.held_down.discard(broker.name)
        record.lifted = time.time()
        record.recovered = await until(
            lambda: broker.is_ready(self.http), self.timing.recovery_limit
        )
        record.notes.append("recovered: the restarted broker answers /readyz")
        self._note(f"{broker.name} ready again")

    async def restart_postgres(self) -> None:
        record = FaultRecord("PostgreSQL restart (pg_ctl restart -m fast)", time.time())
        self.records.append(record)
        self._note("fault: PostgreSQL restarting")
        await self._thread(self.cluster.postgres.restart)
        record.lifted = time.time()
        record.recovered = await until(
            lambda: self._all_ready([*self.services.brokers, *self.services.workers]),
            self.timing.recovery_limit,
        )
        record.notes.append("recovered: every broker and worker answers /readyz")
        self._note("PostgreSQL back; brokers and workers ready")

    async def stop_redis(self) -> None:
        record = FaultRecord(f"Redis stopped for {self.timing.redis_down:g} s", time.time())
        self.records.append(record)
        self._note("fault: Redis stopped")
        await self._thread(self.cluster.redis.stop)
        await asyncio.sleep(self.timing.redis_down)
        await self._thread(self.cluster.redis.start)
        record.lifted = time.time()
        self._note("Redis started again")
        database = self.cluster.postgres.libpq_url
        marker = await asyncio.to_thread(newest_audit_row, database)

        async def caught_up() -> bool:
            if not await self._all_ready(self.services.workers):
                return False
            return await asyncio.to_thread(relay_covers, database, marker)

        record.recovered = await until(caught_up, self.timing.recovery_limit)
        record.notes.append("recovered: workers ready and the audit stream caught up")
        self._note("workers ready, audit stream caught up")

    async def upstream_outage(self) -> None:
        unavailable = FaultRecord(
            f"upstream answers 503 for {self.timing.upstream_unavailable:g} s", time.time()
        )
        self.records.append(unavailable)
        await self._control("/_control/outage", {"mode": "unavailable"})
        self._note("fault: upstream answers 503")
        await asyncio.sleep(self.timing.upstream_unavailable)
        await self._control("/_control/outage", {"mode": "slow", "delay": SLOW_DELAY})
        unavailable.lifted = time.time()
        slow = FaultRecord(
            f"upstream answers in {SLOW_DELAY:g} s for {self.timing.upstream_slow:g} s",
            time.time(),
        )
        self.records.append(slow)
        self._note("fault: upstream slow")
        slow_ends = time.monotonic() + self.timing.upstream_slow
        unavailable.recovered = await until(self._probe_login, self.timing.upstream_slow, poll=0.5)
        unavailable.notes.append("recovered: a sign-in succeeds (while the upstream is slow)")
        await asyncio.sleep(max(0.0, slow_ends - time.monotonic()))
        await self._control("/_control/outage", {"mode": "none"})
        slow.lifted = time.time()
        self._note("upstream answers normally again")
        if unavailable.recovered is None:
            unavailable.recovered = await until(self._probe_login, self.timing.recovery_limit)
        database = self.cluster.postgres.libpq_url

        async def healthy() -> bool:
            fast = await self._probe_login(fast_within=1.5)
            return fast and await asyncio.to_thread(_links_all_ok, database)

        slow.recovered = await until(healthy, self.timing.recovery_limit, poll=0.5)
        slow.notes.append("recovered: a sign-in takes < 1.5 s and every upstream link is ok")
        self._note("sign-ins fast again, every upstream link ok")

    async def _mid_refresh(self) -> tuple[Service, str, str] | None:
        """The worker holding the stand-in's hung refresh: it, the job id and the token."""
        log = (await self.http.get(f"{self.services.upstream_url}/_control/refresh_log")).json()
        hung = [e for e in log["refreshes"] if e["fault"] == "hang" and e["status"] is None]
        if not hung:
            return None
        holders = [
            (worker, jobs)
            for worker in self.services.workers
            if worker.running and (jobs := worker.unfinished_jobs("refresh_upstream_token"))
        ]
        if len(holders) != 1:
            return None  # none yet, or another worker's job is just starting: look again
        worker, jobs = holders[0]
        return worker, jobs[0], str(hung[-1]["refresh_token"])

    async def kill_worker(self) -> None:
        await self._control(
            "/_control/refresh_faults",
            {"mode": "hang", "count": 1, "seconds": HUNG_REFRESH_SECONDS},
        )
        found: tuple[Service, str, str] | None = None
        deadline = time.monotonic() + self.timing.recovery_limit
        while time.monotonic() < deadline:
            found = await self._mid_refresh()
            if found is not None:
                await asyncio.sleep(0.3)
                again = await self._mid_refresh()
                if again is not None and again[:2] == found[:2]:
                    break
                found = None
            await asyncio.sleep(POLL)
        await self._control("/_control/refresh_faults", {"mode": "none"})
        worker = found[0] if found is not None else self.services.workers[-1]
        record = FaultRecord(
            f"SIGKILL {worker.name} mid-job, started again {self.timing.worker_down:g} s later",
            time.time(),
        )
        self.records.append(record)
        if found is None:
            record.notes.append("no refresh job was caught in flight: killed between jobs")
        else:
            record.notes.append(f"killed during job {found[1].split(':', 1)[0]}:…")
        self.held_down.add(worker.name)
        worker.kill()
        self._note(f"fault: {worker.name} killed (SIGKILL) mid-job")
        await asyncio.sleep(self.timing.worker_down)
        worker.spawn()
        self.held_down.discard(worker.name)
        record.lifted = time.time()
        job_id = found[1] if found is not None else None
        ended: list[str] = []

        async def rerun_done() -> bool:
            if not await worker.is_ready(self.http):
                return False
            if job_id is None:
                return True
            ends = [end for w in self.services.workers if (end := w.job_end(job_id))]
            ended.extend(ends[:1])
            return bool(ends)

        limit = self.timing.job_timeout + 10 + self.timing.recovery_limit
        record.recovered = await until(rerun_done, limit, poll=0.5)
        record.notes.append(
            "recovered: the worker is ready and another worker ran the killed job to its end"
        )
        if ended:
            outcome = ended[0].split("●", 1)[-1].strip()[:120]
            record.notes.append(f"the job's second run: {outcome}")
        self._note("the killed job ran again")

    # ------------------------------------------------------------------ supervision

    async def supervise(self, stop: asyncio.Event) -> None:
        """Start again, as an orchestrator would (with a back-off), any process that died on
        its own, and note each exit."""
        while not stop.is_set():
            now = time.monotonic()
            for service in self.services.all:
                name = service.name
                if service.running or name in self.held_down or service.process is None:
                    continue
                streak, seen = self._crash_loop.get(name, (0, 0.0))
                if seen == 0.0:  # a new exit
                    if now - self._spawned.get(name, 0.0) > STABLE_AFTER:
                        streak = 0
                    seen = now
                    self._crash_loop[name] = (streak, seen)
                    code = service.process.returncode
                    self._note(f"UNPLANNED: {name} exited with {code}")
                wait = RESTART_BACKOFF[min(streak, len(RESTART_BACKOFF) - 1)]
                if now - seen < wait or self.restarts.get(name, 0) >= MAX_RESTARTS:
                    continue
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._crash_loop[name] = (streak + 1, 0.0)
                self._spawned[name] = now
                self._note(f"supervisor: {name} started again")
                service.spawn()
            await asyncio.sleep(0.25)
