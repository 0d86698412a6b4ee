"""Access log lines -> request counts, a whole chunk at a time (no Python work per line where avoidable).

`parser_for(fmt)(chunk)` takes complete lines (bytes ending in b"\\n") and returns `Counts`: one Counter
per field (clients, methods, paths, query strings, statuses, agents, hosts) and the count of lines that
did not parse. Malformed lines are counted, never raised.

Combined format (nginx, Apache; also Apache's `vhost_combined`, whose lines start with `host:port`):
nginx escapes `"` inside fields, so a well-formed chunk has exactly six quotes per line and
`chunk.split(b'"')` cuts it into aligned pieces (prefix, request, status, referer, -, agent) in C; the
pieces are counted with Counter (C) and only the distinct values are taken apart in Python. A chunk
that does not align (an Apache `\\"` in an agent, a broken line) goes through one compiled regex
(`findall`, also C). JSON formats (Caddy, generic with a field map) decode line by line (json.loads).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

_Q = rb'"((?:[^"\\\n]++|\\.)*+)"'
COMBINED = re.compile(
    rb"^(?:([^\s\[\]]+) (?=\S+ \S+ \S+ \[))?(\S+) \S+ \S+ \[[^\]\n]*\] "
    rb'"([^"\n]*+)" (\d{3}) \S+ ' + _Q + rb" " + _Q + rb"[^\n]*$",
    re.MULTILINE,
)


@dataclass
class Counts:
    """The requests of one chunk, counted per field."""

    clients: Counter[bytes] = field(default_factory=Counter)
    methods: Counter[bytes] = field(default_factory=Counter)
    paths: Counter[bytes] = field(default_factory=Counter)
    queries: Counter[bytes] = field(default_factory=Counter)  # query strings (without requests that have none)
    statuses: Counter[bytes] = field(default_factory=Counter)
    agents: Counter[bytes] = field(default_factory=Counter)
    hosts: Counter[bytes] = field(default_factory=Counter)  # b"": the source's own site
    requests: int = 0
    lines: int = 0
    malformed: int = 0

    def add_requests(self, targets: Counter[bytes]) -> None:
        """Request lines ("GET /a?b HTTP/1.1") -> methods, paths, queries (Python per distinct line)."""
        for req, k in targets.items():
            parts = req.split(b" ")
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"OTHER", b"-")
            path, q, query = target.partition(b"?")
            self.methods[method] += k
            self.paths[path] += k
            if q:
                self.queries[query] += k


def count_lines(chunk: bytes) -> int:
    return chunk.count(b"\n") + (0 if not chunk or chunk.endswith(b"\n") else 1)


def strip_port(host: bytes) -> bytes:
    """b"shop.example:443" -> b"shop.example"; b"[2001:db8::1]:443" -> b"[2001:db8::1]"."""
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.rsplit(b":", 1)[0] if host.count(b":") == 1 else host


def _split_aligned(chunk: bytes, n: int) -> list[bytes] | None:
    """The chunk's quote-separated pieces when every line has exactly six quotes, else None."""
    if not chunk.endswith(b"\n") or chunk.count(b'"') != 6 * n:
        return None
    pieces = chunk.split(b'"')
    heads = pieces[6::6]
    if not all(map(bytes.startswith, heads[:-1], repeat(b"\n"))) or heads[-1] != b"\n":
        return None
    return pieces


def _prefixes(out: Counts, pieces: list[bytes], n: int) -> None:
    """`[vhost ]client ident user [time] ` pieces -> clients and hosts.

    The usual `client ident user [time zone] ` has five space-separated tokens: joined and split once
    (C), the clients are every fifth token. Otherwise (a virtual host first, a user name with a space)
    each distinct piece is taken apart in Python."""
    tokens = b"".join(pieces).split(b" ")
    if len(tokens) == 5 * n + 1 and all(map(bytes.startswith, tokens[3::5], repeat(b"["))):
        for client, k in Counter(tokens[0:-1:5]).items():
            out.clients[client.lstrip(b"\n")] += k
        out.hosts[b""] += n
        return
    for piece, k in Counter(pieces).items():
        words = piece.split(b"[", 1)[0].split()
        if len(words) == 3:
            out.clients[words[0]] += k
            out.hosts[b""] += k
        elif len(words) == 4:
            out.clients[words[1]] += k
            out.hosts[strip_port(words[0])] += k
        else:
            out.malformed += k


def parse_combined(chunk: bytes) -> Counts:
    n = count_lines(chunk)
    pieces = _split_aligned(chunk, n)
    if pieces is None:
        return _parse_combined_regex(chunk, n)
    out = Counts(lines=n)
    _prefixes(out, pieces[0:-1:6], n)
    statuses: Counter[bytes] = Counter(pieces[2::6])
    good = n - out.malformed
    if out.malformed:  # rare: recount the other fields from the lines that parsed
        return _parse_combined_regex(chunk, n)
    out.requests = good
    out.add_requests(Counter(pieces[1::6]))
    for st, k in statuses.items():
        out.statuses[st.split(None, 1)[0] if st.strip() else b"000"] += k
    out.agents.update(Counter(pieces[5::6]))
    return out


def _parse_combined_regex(chunk: bytes, n: int) -> Counts:
    rows = COMBINED.findall(chunk)
    out = Counts(lines=n, malformed=n - len(rows), requests=len(rows))
    if not rows:
        return out
    vhost, client, request, status, _referer, agent = zip(*rows, strict=True)
    out.clients.update(client)
    out.hosts.update(strip_port(h) for h in vhost)
    out.add_requests(Counter(request))
    out.statuses.update(status)
    out.agents.update(agent)
    return out


def _dig(obj: Any, dotted: list[str]) -> Any:
    for part in dotted:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    if isinstance(obj, list):  # Caddy's headers are lists of strings
        obj = obj[0] if obj else None
    return obj


def _text(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8", "replace")
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(int(v)).encode()
    return b""


CADDY_FIELDS = {"client": "request.client_ip", "method": "request.method", "uri": "request.uri",
                "status": "status", "agent": "request.headers.User-Agent", "host": "request.host"}
CADDY_FALLBACK = {"client": "request.remote_ip"}  # Caddy before 2.7 has no client_ip


def _json_values(line: bytes, paths: dict[str, list[str]], fallback: dict[str, list[str]]) -> dict[str, bytes]:
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    if not isinstance(obj, dict):
        return {}
    vals = {k: _text(_dig(obj, p)) for k, p in paths.items()}
    for k, p in fallback.items():
        if not vals.get(k):
            vals[k] = _text(_dig(obj, p))
    return vals


def json_parser(fields: dict[str, str], fallback: dict[str, str] | None = None) -> Callable[[bytes], Counts]:
    """A parser for JSON lines with the given field map (our name -> dotted key)."""
    paths = {k: v.split(".") for k, v in fields.items()}
    fb = {k: v.split(".") for k, v in (fallback or {}).items()}

    def parse(chunk: bytes) -> Counts:
        out = Counts()
        requests: Counter[bytes] = Counter()
        for line in _nonblank(chunk.splitlines()):
            out.lines += 1
            vals = _json_values(line, paths, fb)
            client, uri = vals.get("client", b""), vals.get("uri", b"")
            if not client or not uri:
                out.malformed += 1
                continue
            out.requests += 1
            out.clients[client] += 1
            requests[(vals.get("method") or b"OTHER") + b" " + uri.replace(b" ", b"%20")] += 1
            out.statuses[vals.get("status") or b"000"] += 1
            out.agents[vals.get("agent", b"")] += 1
            out.hosts[strip_port(vals.get("host", b""))] += 1
        out.add_requests(requests)
        return out

    return parse


def _nonblank(lines: Iterable[bytes]) -> Iterable[bytes]:
    return (line for line in lines if line.strip())


def parser_for(fmt: str, fields: dict[str, str] | None = None) -> Callable[[bytes], Counts]:
    """The chunk parser of a source format (see floodwatch.settings.weblog.FORMATS)."""
    if fmt in ("nginx", "apache"):
        return parse_combined
    if fmt == "caddy":
        return json_parser(CADDY_FIELDS, CADDY_FALLBACK)
    if fmt == "json":
        return json_parser(dict(fields or {}))
    raise ValueError(f"unknown log format {fmt!r}")
