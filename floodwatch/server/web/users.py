"""Dashboard users: roles, generated passwords, slow salted hashes (scrypt), the first-start admin.

Passwords are generated (never chosen), shown once, and stored only as `scrypt$n$r$p$salt$hash`.
The functions taking a store run in the database thread (`srv.db.call(fn, store, ...)`) or in the CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from floodwatch.server.paths import write_private
from floodwatch.server.store import Conflict, Store

ROLES = ("viewer", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # ~50 ms and 32 MiB per check
ADMIN_FILE = "dashboard-admin-password"
_DUMMY = None  # a hash to check against when the user does not exist (the same time either way)


def new_password() -> str:
    return secrets.token_urlsafe(15)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    global _DUMMY
    if stored is None:
        _DUMMY = _DUMMY or hash_password("no such user")
        hash_password(password, bytes.fromhex(_DUMMY.split("$")[4]))
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and name.isprintable() and name.strip() == name


def add_user(store: Store, name: str, role: str, now: float) -> dict[str, str]:
    """Create a user with a generated password: {"name", "role", "password"} (the only time it is seen)."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    if not valid_name(name):
        raise ValueError("name: 1 to 64 printable characters, no surrounding spaces")
    password = new_password()
    try:
        with store.transaction():
            store.execute("INSERT INTO dash_users (name, role, pw_hash, created_at) VALUES (?, ?, ?, ?)",
                          (name, role, hash_password(password), now))
    except Conflict:
        raise Conflict(f"a user named {name!r} exists") from None
    return {"name": name, "role": role, "password": password}


def find_user(store: Store, name: str) -> dict[str, Any] | None:
    row = store.execute("SELECT name, role, pw_hash FROM dash_users WHERE name = ?", (name,)).fetchone()
    return None if row is None else {"name": row[0], "role": row[1], "pw_hash": row[2]}


def list_users(store: Store) -> list[dict[str, Any]]:
    rows = store.execute("SELECT name, role, created_at FROM dash_users ORDER BY name").fetchall()
    return [{"name": r[0], "role": r[1], "created_at": r[2]} for r in rows]


def delete_user(store: Store, name: str) -> bool:
    """Delete a user; its sessions go with it (a foreign key), so it is signed out on every replica."""
    with store.transaction():
        return int(store.execute("DELETE FROM dash_users WHERE name = ?", (name,)).rowcount) == 1


def ensure_admin(store: Store, path: Path, now: float) -> bool:
    """First start: no admin user -> create `admin` and write its password to `path` (0600). True if made.
    Replicas starting together: the one whose insert wins writes the file; the others find the user."""
    if store.execute("SELECT 1 FROM dash_users WHERE role = 'admin' OR name = 'admin' LIMIT 1").fetchone():
        return False
    try:
        made = add_user(store, "admin", "admin", now)
    except Conflict:
        return False
    write_private(path, made["password"] + "\n")
    return True
