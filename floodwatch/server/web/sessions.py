"""Browser sessions and the sign-in rate limits, kept in the server's database (tables `dash_sessions`
and `dash_login_failures`, schema version 3), so a restart signs nobody out and every replica behind a
proxy knows every session, its CSRF token and every failed sign-in.

A session is a 256-bit random cookie value; the database keeps only its SHA-256, with the user and a
per-session CSRF token that every state-changing request must echo. The role is read from the user's
row at each lookup (a deleted user's sessions go with it: a foreign key). The functions taking a store
run in the database thread; `now` is the wall clock (shared by the replicas), injected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from floodwatch.server.store import Store

COOKIE = "fw_session"
IDLE_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000
TOUCH_SECONDS = 60.0  # a session's last use is written at most this often (not on every request)
LOGIN_FAILURES = 5  # failed sign-ins allowed per address and per user name within LOGIN_WINDOW
LOGIN_WINDOW = 60.0
MAX_TOKEN = 128  # a longer cookie is no token of ours: refused without a lookup


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    seen: float


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(store: Store, user: str, role: str, now: float, idle: float = IDLE_SECONDS,
           max_sessions: int = MAX_SESSIONS) -> tuple[str, Session]:
    """A new session for `user` (who must exist): (the cookie value, the session). Expired sessions are
    removed, and beyond `max_sessions` the least recently used ones."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with store.transaction():
        store.execute("DELETE FROM dash_sessions WHERE seen_at < ?", (now - idle,))
        store.execute("INSERT INTO dash_sessions (token_hash, user_name, csrf, created_at, seen_at) "
                      "VALUES (?, ?, ?, ?, ?)", (token_key(token), user, csrf, now, now))
        bound = store.execute("SELECT seen_at FROM dash_sessions ORDER BY seen_at DESC LIMIT 1 OFFSET ?",
                              (max_sessions,)).fetchone()
        if bound is not None:
            store.execute("DELETE FROM dash_sessions WHERE seen_at <= ? AND token_hash != ?",
                          (bound[0], token_key(token)))
    return token, Session(user, role, csrf, now)


def get(store: Store, token: str | None, now: float, idle: float = IDLE_SECONDS) -> Session | None:
    """The live session of this cookie value, or None (unknown, expired, or its user deleted)."""
    if not token or len(token) > MAX_TOKEN:
        return None
    key = token_key(token)
    row = store.execute("SELECT s.csrf, s.seen_at, u.name, u.role FROM dash_sessions s JOIN dash_users u "
                        "ON u.name = s.user_name WHERE s.token_hash = ?", (key,)).fetchone()
    if row is None:
        return None
    seen = float(row[1])
    if now - seen > idle:
        store.execute("DELETE FROM dash_sessions WHERE token_hash = ?", (key,))
        return None
    if now - seen >= TOUCH_SECONDS:
        store.execute("UPDATE dash_sessions SET seen_at = ? WHERE token_hash = ?", (now, key))
        seen = now
    return Session(str(row[2]), str(row[3]), str(row[0]), seen)


def drop(store: Store, token: str | None) -> None:
    if token and len(token) <= MAX_TOKEN:
        store.execute("DELETE FROM dash_sessions WHERE token_hash = ?", (token_key(token),))


def prune(store: Store, now: float, idle: float = IDLE_SECONDS) -> int:
    """Forget expired sessions and failures older than the window (the housekeeping task runs it)."""
    n = int(store.execute("DELETE FROM dash_sessions WHERE seen_at < ?", (now - idle,)).rowcount)
    return n + int(store.execute("DELETE FROM dash_login_failures WHERE at <= ?", (now - LOGIN_WINDOW,)).rowcount)


# -- sign-in rate limits ---------------------------------------------------------------------------
def _keys(address: str, user: str) -> tuple[str, str]:
    return f"a:{address[:64]}", f"u:{user[:64]}"


def wait_after(times: list[float], now: float, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW) -> float:
    """Seconds to wait given a key's failure times within the window, newest first (0.0: go ahead)."""
    recent = [t for t in times if t > now - window][:limit]
    return 0.0 if len(recent) < limit else max(0.001, recent[-1] + window - now)


def login_wait(store: Store, address: str, user: str, now: float) -> float:
    """Seconds before a sign-in from this address for this user may be checked (0.0: go ahead)."""
    waits = []
    for key in _keys(address, user):
        rows = store.execute("SELECT at FROM dash_login_failures WHERE key = ? AND at > ? ORDER BY at DESC "
                             "LIMIT ?", (key, now - LOGIN_WINDOW, LOGIN_FAILURES)).fetchall()
        waits.append(wait_after([float(r[0]) for r in rows], now))
    return max(waits)


def login_failed(store: Store, address: str, user: str, now: float) -> None:
    """Count a failed sign-in against the address and the user name. The table stays small: rows older
    than the window are deleted here, and each row cost the client a password check (scrypt)."""
    with store.transaction():
        store.execute("DELETE FROM dash_login_failures WHERE at <= ?", (now - LOGIN_WINDOW,))
        for key in _keys(address, user):
            store.execute("INSERT INTO dash_login_failures (key, at) VALUES (?, ?)", (key, now))


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode("utf-8", "replace"))
