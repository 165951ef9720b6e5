"""What the load generator saw: every request to the broker, every refresh-token presentation,
every session it held and every login it tried. The checks hold the database, the audit stream
and the stand-in's log against it; the report counts it by class and by fault window."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

# Request classes, in the order the report lists them.
CLASSES = (
    "login",
    "refresh",
    "refresh_api",
    "refresh_race",
    "userinfo",
    "introspect",
    "admin",
    "logout",
)


@dataclass
class Exchange:
    """One HTTP request to the broker (through the proxy)."""

    kind: str
    started: float  # time.time()
    ended: float
    status: int | None  # None: no answer (the connection dropped, or it timed out)
    error: str | None = None  # the OAuth error code, or the transport error's name
    unexpected: str | None = None  # an answer that is wrong (a live session refused...)

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Presentation:
    """One presentation of a refresh token and what came back."""

    token: str
    sid: str
    started: float
    ended: float
    status: int | None
    error: str | None
    successor: str | None = None
    race: bool = False


@dataclass
class SessionRecord:
    """A broker session the load generator held: its refresh tokens, in the order it got them,
    and why it stopped using it (None: still in use at the end)."""

    sid: str
    user_id: str
    upstream_subject: str
    client_id: str
    admin: bool
    tokens: list[str] = field(default_factory=list)
    ended: str | None = None  # "logout", "race", "refused", "abandoned"
    raced: bool = False
    logged_out: bool = False


@dataclass
class LoginRecord:
    started: float
    ended: float
    ok: bool
    step: str  # the step it ended at: "authorize", "upstream", "callback", "token", "done"
    detail: str | None = None
    sid: str | None = None


@dataclass
class Ledger:
    exchanges: list[Exchange] = field(default_factory=list)
    presentations: dict[str, list[Presentation]] = field(default_factory=lambda: defaultdict(list))
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    logins: list[LoginRecord] = field(default_factory=list)
    shed: int = 0  # operations not started: too many in flight
    idle: int = 0  # operations not started: no session free for them

    def present(self, presentation: Presentation) -> None:
        self.presentations[presentation.token].append(presentation)

    def successful_rotations(self) -> int:
        return sum(
            1 for attempts in self.presentations.values() for p in attempts if p.status == 200
        )

    def token_owner(self) -> dict[str, str]:
        """Each refresh token handed out, by the session it belongs to."""
        return {token: sid for sid, record in self.sessions.items() for token in record.tokens}
