"""The listening side of the server: connection caps, a deadline for request heads, TLS.

aiohttp's RequestHandler serves HTTP on one connection; GuardedHandler adds what a server facing the
internet needs, before aiohttp sees a byte:
- caps: at most `max_connections` open connections, `max_connections_per_address` from one address;
  one more is answered 503 (JSON, Retry-After) and closed without reading it;
- a deadline for the first request head: a client that has not sent a complete head within
  `header_timeout` seconds of connecting is answered 408 and closed (slowloris). Later requests on a
  kept-alive connection have aiohttp's `keepalive_timeout`: a connection that has not started (or not
  finished the head of) its next request that long after the previous answer is closed;
- errors aiohttp finds before any handler runs (a malformed request line, headers too large) are
  answered as JSON `{"error": ...}` and counted, like every other bad request.
With TLS, connections count once the handshake is done; the handshake itself has `header_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from floodwatch.errors import ConfigError
from floodwatch.server.clientaddr import CLIENT_KEY


@dataclass
class ConnectionLimits:
    """Open connections, in total and per client address. Pure bookkeeping."""

    total: int
    per_address: int
    open: int = 0
    by_address: dict[str, int] = field(default_factory=dict)

    def admit(self, address: str) -> str | None:
        """Count a new connection in, or say why it is refused (and count nothing)."""
        if self.open >= self.total:
            return f"too many connections ({self.total}), retry later"
        if self.by_address.get(address, 0) >= self.per_address:
            return f"too many connections from {address} ({self.per_address}), retry later"
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address.get(address, 0) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)


@dataclass
class Guard:
    """What every GuardedHandler of one server shares."""

    limits: ConnectionLimits
    header_timeout: float
    count: Callable[[str], None]


class ClientAccessLogger(AbstractAccessLogger):
    """`access_log = true`: one line per request naming the client (behind trusted proxies the forwarded
    address, else the TCP peer), method, path without its query, status, size and time. Everything the
    client sent is an argument, never part of the format."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = request.get(CLIENT_KEY) or request.remote or "-"
        self.logger.info("{} \"{} {}\" {} {} {:.1f} ms", client, request.method, request.rel_url.path,
                         response.status, response.body_length, time * 1000)


def raw_answer(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, for connections aiohttp never handles."""
    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json; charset=utf-8",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GuardedHandler(web.RequestHandler):
    """aiohttp's request handler behind the guard (see the module's docstring)."""

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None  # set once admitted
        self._head_timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        refused = self._guard.limits.admit(address)
        if refused is not None:
            self._guard.count("connections_refused")
            transport.write(raw_answer(503, refused, {"Retry-After": "5"}))  # type: ignore[attr-defined]
            transport.close()
            return
        self._address = address
        self._head_timer = asyncio.get_running_loop().call_later(self._guard.header_timeout, self._head_late)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._address is None:
            return
        if self._head_timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._head_timer.cancel()
                self._head_timer = None
            else:
                self._tail = seen[-3:]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.limits.release(self._address)
        self._address = None
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        self._guard.count("header_timeouts")
        if self.transport is not None:
            self.transport.write(raw_answer(408, f"request head not complete within {self._guard.header_timeout:g} s"))
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse: JSON like every other error, and counted."""
        if status >= 500:
            self._guard.count("errors_5xx")
            return super().handle_error(request, status, exc, message)
        self._guard.count("errors_4xx")
        self._guard.count("bad_requests")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send the error")
        reason = (message or HTTPStatus(status).phrase).strip().splitlines()[0][:100]
        resp = web.json_response({"error": f"request: malformed ({reason})"}, status=status)
        resp.force_close()
        return resp


def server_tls(cert: str, key: str) -> ssl.SSLContext | None:
    """The TLS context for `tls_cert`/`tls_key` (None without them); ConfigError naming the problem."""
    if not cert:
        return None
    try:
        mode = os.stat(key).st_mode
    except OSError as e:
        raise ConfigError(f"apiserver.tls_key {key}: cannot read: {e.strerror or e}") from e
    if mode & stat.S_IRWXO:
        raise ConfigError(f"apiserver.tls_key {key}: readable by others (mode {stat.S_IMODE(mode):o}); "
                          f"run: chmod 600 {key}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"apiserver.tls_cert {cert} / tls_key {key}: cannot load: {e}") from e
    return ctx
