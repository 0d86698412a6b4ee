"""Credentials and per-node rate limiting. Pure logic with an injected clock.

API keys and admin tokens are 256-bit random strings; only their SHA-256 is stored (a key with that
much entropy needs no slow hash). Checks compare digests with hmac.compare_digest, and an unknown node
costs the same lookup and comparison as a known one (ApiServer.node_auth), so timing tells an
attacker nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

KEY_PREFIX = "fwk_"
ADMIN_PREFIX = "fwa_"
DUMMY_HASH = hashlib.sha256(b"no such node").hexdigest()  # compared against when there is no node


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_admin_token() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def new_node_uuid() -> str:
    return str(uuid.uuid4())


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches_hash(presented_hash: str, stored_hash: str) -> bool:
    return hmac.compare_digest(presented_hash, stored_hash)


def bearer(header: str | None) -> str | None:
    """`Bearer <token>` -> token, or None when the header is missing or malformed."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(text: str | None) -> str | None:
    """A node UUID header -> its canonical lower-case form, or None when it is not a UUID."""
    if not text or len(text) > 64:
        return None
    if CANONICAL_UUID.fullmatch(text):  # what agents send (per request): already canonical
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per node: `rate` requests per second, bursts of up to `burst`.

    rate <= 0 turns it off. The table is bounded (least recently used nodes are forgotten, which only
    ever gives them a full bucket again).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_nodes: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.max_nodes = max_nodes
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self._buckets[key] = b
            if len(self._buckets) > self.max_nodes:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate


def retry_after_header(wait: float) -> str:
    """Seconds for a Retry-After header: a whole number, at least 1."""
    return str(max(1, math.ceil(wait)))
