"""Parsed requests -> weblog.window messages, with bounded memory whatever the clients send.

Every dimension an attacker controls (client address and prefix, path, user agent, site) goes through
a Space-Saving heavy-hitter table (floodwatch.aggregate.spacesaving) keyed by a 64-bit hash, with the
names of the keys still in the table kept beside it; methods are folded into a fixed set; distinct
clients and query strings are HyperLogLog estimates. Per chunk, counting is `collections.Counter` over
the column (C), so Python work is per distinct value of a chunk, not per line.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import numpy as np

from floodwatch.aggregate.hll import HyperLogLog
from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.messages import WebWindow
from floodwatch.settings.weblog import WeblogSettings
from floodwatch.weblog.parse import Counts

MASK = (1 << 64) - 1
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PRI"})
STATUS_CLASSES = {"2": "2xx", "3": "3xx", "4": "4xx", "5": "5xx"}


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class TopNames:
    """A heavy-hitter table of byte strings: counts by 64-bit hash, names for the keys it holds."""

    def __init__(self, capacity: int) -> None:
        self.hh = HeavyHitters(capacity, buffer=capacity * 8)
        self.names: dict[int, bytes] = {}
        self.capacity = capacity

    def add(self, counts: Counter[bytes]) -> None:
        if not counts:
            return
        n = len(counts)
        keys = np.fromiter((hash(k) & MASK for k in counts), dtype=np.uint64, count=n)
        self.names.update(zip(keys.tolist(), counts, strict=True))
        self.hh.update(keys, np.fromiter(counts.values(), dtype=np.int64, count=n))
        if len(self.names) > 4 * self.capacity:
            self.hh.fold()
            held = set(self.hh.keys.tolist())
            self.names = {k: v for k, v in self.names.items() if k in held}

    def top(self, n: int) -> list[list[Any]]:
        keys, counts, _, _ = self.hh.top(n)
        return [[_text(self.names.get(int(k), b"?")), int(c)] for k, c in zip(keys, counts, strict=True)]


def _hashes(counts: Counter[bytes]) -> np.ndarray:
    return np.fromiter((hash(k) & MASK for k in counts), dtype=np.uint64, count=len(counts))


def prefix_of(client: bytes, v4: int, v6: int) -> bytes:
    """The client's network (b"198.51.100.0/24"); the client itself when it is not an address."""
    try:
        text = client.decode("ascii")
        family, bits, width = (socket.AF_INET6, v6, 128) if ":" in text else (socket.AF_INET, v4, 32)
        packed = socket.inet_pton(family, text)
    except (UnicodeDecodeError, OSError, ValueError):
        return client
    masked = int.from_bytes(packed, "big") >> (width - bits) << (width - bits)
    return f"{socket.inet_ntop(family, masked.to_bytes(width // 8, 'big'))}/{bits}".encode()


class WindowBuilder:
    """Accumulates parsed chunks; `flush(t_end)` returns the window and starts the next one."""

    def __init__(self, settings: WeblogSettings, t_start: float) -> None:
        self.s = settings
        self.t_start = t_start
        self._reset()

    def _reset(self) -> None:
        cap = self.s.capacity
        self.clients, self.prefixes, self.paths = TopNames(cap), TopNames(cap), TopNames(cap)
        self.agents, self.sites = TopNames(cap), TopNames(min(cap, 64))
        self.client_hll, self.query_hll = HyperLogLog(10), HyperLogLog(10)
        self.methods: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.requests = self.lines = self.malformed = self.with_query = 0

    def add(self, c: Counts, site: bytes) -> None:
        self.lines += c.lines
        self.malformed += c.malformed
        if not c.requests:
            return
        self.requests += c.requests
        self.clients.add(c.clients)
        self.client_hll.add_keys(_hashes(c.clients))
        prefixes: Counter[bytes] = Counter()
        for client, k in c.clients.items():
            prefixes[prefix_of(client, self.s.prefix_v4, self.s.prefix_v6)] += k
        self.prefixes.add(prefixes)
        self.paths.add(c.paths)
        self.agents.add(c.agents)
        own = c.hosts.pop(b"", 0)  # lines without a host of their own: the source's site
        if own:
            c.hosts[site] += own
        self.sites.add(c.hosts)
        for m, k in c.methods.items():
            name = _text(m).upper()
            self.methods[name if name in METHODS else "OTHER"] += k
        for st, k in c.statuses.items():
            self.status[STATUS_CLASSES.get(_text(st[:1]), "other")] += k
        if c.queries:
            self.with_query += sum(c.queries.values())
            self.query_hll.add_keys(_hashes(c.queries))

    def flush(self, t_end: float) -> WebWindow:
        n = self.s.top_n
        w = WebWindow(
            t_start=self.t_start, t_end=t_end, requests=self.requests, lines=self.lines, malformed=self.malformed,
            methods=dict(self.methods), status=dict(self.status), with_query=self.with_query,
            distinct_queries=self.query_hll.estimate() if self.with_query else 0,
            distinct_clients=self.client_hll.estimate() if self.requests else 0,
            client_hll=self.client_hll.to_bytes(),
            top_clients=self.clients.top(n), top_prefixes=self.prefixes.top(n), top_paths=self.paths.top(n),
            top_agents=self.agents.top(n), top_sites=self.sites.top(n),
        )
        self.t_start = t_end
        self._reset()
        return w
