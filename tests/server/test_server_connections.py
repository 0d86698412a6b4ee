"""Hostile connections against the real server (a subprocess, real sockets): slow heads are closed,
connections are capped per address and in total, and capacity comes back when they go."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fwserver_util import Backend, ServerProc, admin_headers, running

from tests.helpers import eventually

HEALTH = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(srv: ServerProc, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=15, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer with a Content-Length body (status, headers, body); the socket's timeout bounds it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed without an answer: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = s.recv(65536)
        assert chunk, "closed in the middle of an answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def served(s: socket.socket) -> bool:
    """A request on this (kept-alive) connection is answered 200."""
    s.sendall(HEALTH)
    return answer(s)[0] == 200


def closed_by_server(s: socket.socket) -> bytes:
    """What the server sent before closing (recv returns b"" or the connection is reset)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def health_counters(srv: ServerProc, admin: dict[str, str]) -> dict[str, int]:
    r = srv.request("GET", "/api/v1/admin/health", headers=admin)
    assert r.status == 200, r.raw
    return dict(r.json["counters"])


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory,
           backend: Backend) -> Iterator[tuple[ServerProc, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("caps")
    with running(tmp, "--max-connections", "6", "--max-connections-per-address", "3", "--header-timeout", "60",
                 "--keepalive-timeout", "60", backend=backend) as srv:
        yield srv, admin_headers(srv)


def test_connections_over_the_per_address_cap_are_refused_and_others_still_served(
        capped: tuple[ServerProc, dict[str, str]]) -> None:
    srv, token = capped
    before = health_counters(srv, token)
    with ExitStack() as stack:
        held = [stack.enter_context(connect(srv)) for _ in range(3)]
        assert all(served(s) for s in held)  # admitted: each was answered and stays open
        for _ in range(2):  # more than the cap from the same address
            with connect(srv) as extra:
                status, headers, body = answer(extra)
                assert status == 503 and headers["retry-after"] == "5", body
                assert "too many connections from 127.0.0.1" in json.loads(body)["error"]
                assert closed_by_server(extra) == b""
        with connect(srv, "127.0.0.2") as other:  # another address is not affected
            assert served(other)
        assert all(served(s) for s in held)  # nor are the connections already open
        held.pop().close()
        eventually(lambda: _served_once(srv), 10, message="the freed slot is usable again")
    after = health_counters(srv, token)
    assert after["connections_refused"] - before["connections_refused"] >= 2
    assert after["errors_5xx"] == before["errors_5xx"]


def _served_once(srv: ServerProc) -> bool:
    with connect(srv) as s:
        s.sendall(HEALTH)
        return answer(s)[0] == 200


def test_connections_over_the_total_cap_are_refused(capped: tuple[ServerProc, dict[str, str]]) -> None:
    srv, token = capped
    before = health_counters(srv, token)
    with ExitStack() as stack:
        held = [stack.enter_context(connect(srv, f"127.0.0.{2 + i // 2}")) for i in range(6)]  # 2 per address
        assert all(served(s) for s in held)
        with connect(srv, "127.0.0.9") as extra:  # a fresh address, but the server is full
            status, _, body = answer(extra)
            assert status == 503 and "too many connections (6)" in json.loads(body)["error"]
        held.pop().close()
        eventually(lambda: _served_once(srv), 10, message="the freed slot is usable again")
    assert health_counters(srv, token)["connections_refused"] - before["connections_refused"] >= 1


def test_a_slowloris_client_is_closed_and_others_are_served(tmp_path: Path) -> None:
    with running(tmp_path, "--header-timeout", "1", "--keepalive-timeout", "1") as srv:
        token = admin_headers(srv)
        silent = connect(srv)  # connects and sends nothing at all
        slow = connect(srv)
        slow.sendall(b"POST /api/v1/agent/heartbeat HTTP/1.1\r\nHost: x\r\n")
        got = trickle_until_closed(slow, deadline=30)
        assert got.startswith(b"HTTP/1.1 408"), got
        assert b"request head not complete within 1 s" in got
        silent.settimeout(30)
        assert closed_by_server(silent).startswith(b"HTTP/1.1 408")
        with connect(srv) as fine:  # meanwhile a normal client is served
            assert served(fine)
            fine.sendall(b"GET /api/v1/health HTTP/1.1\r\n")  # its next head is as slow: closed too
            assert trickle_until_closed(fine, deadline=30) == b""
        assert health_counters(srv, token)["header_timeouts"] == 2
        silent.close()
        slow.close()


def trickle_until_closed(s: socket.socket, deadline: float) -> bytes:
    """Send one header byte every 0.2 s, as slowloris does, until the server closes; what it answered."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        readable, _, _ = select.select([s], [], [], 0.2)
        if readable:
            return closed_by_server(s)
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            return b""
    raise AssertionError(f"the server kept a slow client for {deadline} s")


def test_the_listening_socket_queues_a_burst_of_connections(tmp_path: Path) -> None:
    """A fleet reconnecting at once (or nginx opening connections to a replica in a burst) waits in the
    listening socket's queue instead of being refused: its backlog is 4096 (capped by the kernel's
    net.core.somaxconn), not asyncio's 100. `ss` shows a listening socket's backlog as its Send-Q."""
    import subprocess

    cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    with running(tmp_path) as srv:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{srv.port}"], capture_output=True, text=True,
                             check=True).stdout.split()
        assert int(out[2]) == min(4096, cap), out
