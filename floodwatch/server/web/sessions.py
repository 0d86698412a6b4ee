"""Browser sessions (in memory: a server restart signs everyone out) and the login rate limits.

A session is a 256-bit random cookie value; the server keeps only its SHA-256, with the user, role
and a per-session CSRF token that every state-changing request must echo. Pure logic, injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "fw_session"
IDLE_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000
LOGIN_FAILURES = 5  # failed sign-ins allowed per address and per user name within LOGIN_WINDOW
LOGIN_WINDOW = 60.0
MAX_TRACKED = 100_000


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    seen: float


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic, idle: float = IDLE_SECONDS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.idle = idle
        self.max_sessions = max_sessions
        self._by_key: OrderedDict[str, Session] = OrderedDict()
        self.failures = FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW, clock)

    def create(self, user: str, role: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), self.clock())
        self._by_key[_key(token)] = session
        while len(self._by_key) > self.max_sessions:
            self._by_key.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        key = _key(token)
        session = self._by_key.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle:
            del self._by_key[key]
            return None
        session.seen = now
        self._by_key.move_to_end(key)
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_key.pop(_key(token), None)

    def drop_user(self, user: str) -> None:
        for key in [k for k, s in self._by_key.items() if s.user == user]:
            del self._by_key[key]

    def login_wait(self, address: str, user: str) -> float:
        """Seconds before a sign-in from this address for this user may be checked (0.0: go ahead)."""
        return max(self.failures.wait(f"a:{address}"), self.failures.wait(f"u:{user[:64]}"))

    def login_failed(self, address: str, user: str) -> None:
        self.failures.add(f"a:{address}")
        self.failures.add(f"u:{user[:64]}")


class FailureLimiter:
    """At most `limit` failures per key within `window` seconds; a bounded table (oldest keys forgotten)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._times: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str) -> list[float]:
        cutoff = self.clock() - self.window
        times = [t for t in self._times.get(key, []) if t > cutoff]
        if times:
            self._times[key] = times
        else:
            self._times.pop(key, None)
        return times

    def wait(self, key: str) -> float:
        times = self._recent(key)
        return 0.0 if len(times) < self.limit else max(0.001, times[0] + self.window - self.clock())

    def add(self, key: str) -> None:
        times = self._recent(key)[-(self.limit - 1):] if self.limit > 1 else []
        self._times[key] = [*times, self.clock()]
        self._times.move_to_end(key)
        while len(self._times) > MAX_TRACKED:
            self._times.popitem(last=False)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode("utf-8", "replace"))
