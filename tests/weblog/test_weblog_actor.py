"""The weblog actor as a process on real sockets: windows on the bus, malformed lines counted, and a
restart (SIGTERM, then a rotation while it is down) that neither re-reads nor skips a line."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

from floodwatch.messages import WebWindow
from tests.helpers import (
    BusHarness,
    Subscriber,
    base_config,
    eventually,
    start_actor,
    stop_process,
    tcp_endpoints,
    write_config,
)


def line(i: int) -> bytes:
    return (f'198.51.100.{i % 200} - - [30/Nov/2026:19:00:00 +0000] "GET /item/{i} HTTP/1.1" 200 5 "-" '
            f'"test/{i % 3}"\n').encode()


def requests_until(sub: Subscriber, total: int, timeout: float = 15.0) -> int:
    """Sum the requests of the windows until `total` is reached (or passed: then the test fails)."""
    seen = 0

    def more() -> bool:
        nonlocal seen
        seen += sub.get(WebWindow, 2.0).requests
        return seen >= total

    eventually(more, timeout, interval=0.0, message=f"{total} requests in the windows")
    return seen


def requests_in_next(sub: Subscriber, windows: int) -> int:
    return sum(sub.get(WebWindow, 2.0).requests for _ in range(windows))


def test_weblog_actor_restart_neither_rereads_nor_skips(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(line(0) * 50)  # history before the agent ever ran: not counted
    eps = tcp_endpoints()
    cfg = base_config(tmp_path, eps, weblog={"enabled": True, "source": [{"path": str(log), "site": "shop"}]})
    path = write_config(tmp_path / "fw.toml", cfg)
    with BusHarness(eps) as harness, closing(harness.subscriber(WebWindow)) as sub:
        proc = start_actor("weblog", path, tmp_path / "weblog.log")
        try:
            harness.wait_ready("weblog", 30)
            with open(log, "ab") as f:
                f.write(b"".join(line(i) for i in range(1, 301)) + b"not a log line\n")
            assert requests_until(sub, 300) == 300
            eventually(lambda: harness.counters("weblog").get("malformed") == 1, 10, message="one malformed line")
        finally:
            stop_process(proc)
        sub.drain(0.5)  # the actor is stopped: what is left of its windows
        with open(log, "ab") as f:  # written while the actor is down ...
            f.write(b"".join(line(i) for i in range(301, 401)))
        os.rename(log, f"{log}.1")  # ... and rotated while it is down
        log.write_bytes(b"".join(line(i) for i in range(401, 451)))
        harness.ready.discard("weblog")  # the restarted actor must say ready again
        proc = start_actor("weblog", path, tmp_path / "weblog.log")
        try:
            harness.wait_ready("weblog", 30)
            assert requests_until(sub, 150) == 150  # the old file's rest, then the new file: 100 + 50
            assert requests_in_next(sub, 4) == 0
        finally:
            stop_process(proc)
