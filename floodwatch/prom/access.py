"""Who may scrape /metrics (the server's and the agent's): one rule for both.

With a token configured (a 0600 file, or the environment), every scrape must send
`Authorization: Bearer <token>`, from any address. Without one, only loopback clients are answered:
the metrics tell an attacker which nodes exist and when they are under attack.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from floodwatch.errors import ConfigError
from floodwatch.server.auth import bearer

MIN_TOKEN_CHARS = 16
TOKEN_ENV = "FLOODWATCH_METRICS_TOKEN"  # noqa: S105 - the variable's name, not a secret


def read_token(path: str, key: str, env_var: str = TOKEN_ENV) -> str | None:
    """The scrape token from `path` (its content, stripped) or $`env_var`; None when neither is set.
    ConfigError naming `key` when the file cannot be read or the token is too short to be a secret."""
    token = ""
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from e
    token = token or os.environ.get(env_var, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{key}: the metrics token must have at least {MIN_TOKEN_CHARS} characters")
    return token


def is_loopback(remote: str | None) -> bool:
    """A client address on this host (127.0.0.0/8, ::1, ::ffff:127.x); None is a Unix socket."""
    if remote is None:
        return True
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def refusal(remote: str | None, authorization: str | None, token: str | None) -> tuple[int, str] | None:
    """None when the scrape may be answered, else (HTTP status, reason)."""
    if token is not None:
        if hmac.compare_digest((bearer(authorization) or "").encode(), token.encode()):
            return None
        return 401, "metrics: missing or wrong bearer token"
    if is_loopback(remote):
        return None
    return 403, "metrics: only loopback clients may scrape without a metrics token (see docs/metrics.md)"
