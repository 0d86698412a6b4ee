"""Live detection in network namespaces: generator (namespace A) -> veth -> capture, aggregator and
detector (real processes in namespace B) -> the event bus of this process.

Used by tests/detect/test_detect_live.py and benchmarks/detector_latency.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodwatch.messages import IncidentOpened, IncidentResolved, IncidentUpdated
from tests.helpers import (
    PYTHON,
    REPO,
    BusHarness,
    NetnsPair,
    Subscriber,
    base_config,
    ipc_endpoints,
    start_actor,
    stop_process,
    write_config,
)

ACTORS = ("detector", "aggregator", "capture")  # consumers first: they bind the bulk channels


@dataclass
class Live:
    pair: NetnsPair
    harness: BusHarness
    sub: Subscriber
    tmp: Path

    def send(self, vector: str, pps: float, seconds: float, v6: bool = False, **extra: str) -> subprocess.Popen[str]:
        """Start the generator in namespace A towards B's address (not waited for)."""
        dst = self.pair.ip6_b if v6 else self.pair.ip4_b
        argv = [PYTHON, "-m", "floodwatch.cli", "traffic", "send", vector, "--iface", self.pair.if_a,
                "--pps", str(pps), "--duration", str(seconds), "--dst", dst, "--dst-mac", self.pair.mac_b,
                "--variety", "1024", *(["--ipv6"] if v6 else [])]
        for k, v in extra.items():
            argv += [f"--{k.replace('_', '-')}", v]
        return self.pair.popen(self.pair.ns_a, argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)

    def opened(self, timeout: float = 15.0) -> tuple[IncidentOpened, float]:
        """The next incident.opened and the wall time it arrived."""
        msg = self.sub.get(IncidentOpened, timeout)
        return msg, time.time()

    def resolved(self, timeout: float = 30.0) -> IncidentResolved:
        return self.sub.get(IncidentResolved, timeout)


def sender_report(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"traffic send failed ({proc.returncode}): {err[-1000:]}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


@contextmanager
def live_pipeline(pair: NetnsPair, tmp: Path, detector: dict[str, Any],
                  lateness: float | None = None, window: float = 0.1,
                  capture: dict[str, Any] | None = None) -> Iterator[Live]:
    """capture + aggregator + detector in namespace B, on ipc endpoints this process proxies; the
    capture and aggregator settings that set the latency are the defaults unless given (`capture`:
    [capture] settings away from the default, e.g. budget_pps)."""
    eps = ipc_endpoints(tmp / "bus")
    procs: list[subprocess.Popen[bytes]] = []
    with BusHarness(eps) as harness:
        cfg = base_config(tmp, eps,
                          capture={"interfaces": [pair.if_b], "frames_per_second": 0, **(capture or {})},
                          aggregator={"geo": "off", "window": window,
                                      **({"lateness": lateness} if lateness is not None else {})},
                          detector=detector)
        cfg["supervisor"]["heartbeat_timeout"] = 10.0
        path = write_config(tmp / "live.toml", cfg)
        try:
            sub = harness.subscriber(IncidentOpened, IncidentUpdated, IncidentResolved)
            with closing(sub):
                for name in ACTORS:
                    procs.append(start_actor(name, path, tmp / f"{name}.log", netns=pair.ns_b))
                    harness.wait_ready(name, timeout=30)
                yield Live(pair, harness, sub, tmp)
        finally:
            for proc in reversed(procs):
                stop_process(proc)


BULK_SERVER = r"""
import socket, sys, threading, time
mode, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def pump(conn):
    buf = bytes(1 << 16)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            conn.sendall(buf)
    except OSError:
        pass
    conn.close()
def drain(conn):
    try:
        while conn.recv(1 << 16):
            pass
    except OSError:
        pass
    conn.close()
if mode == "server":
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port)); srv.listen(4)
    print("listening", flush=True)
    threads = []
    for i in range(2):
        conn, _ = srv.accept()
        t = threading.Thread(target=pump if i == 0 else drain, args=(conn,)); t.start(); threads.append(t)
    for t in threads: t.join()
else:
    a = socket.create_connection((host, port)); b = socket.create_connection((host, port))
    ta = threading.Thread(target=drain, args=(a,)); tb = threading.Thread(target=pump, args=(b,))
    ta.start(); tb.start(); ta.join(); tb.join()
"""


def bulk_tcp_both_ways(pair: NetnsPair, seconds: float, v6: bool = False, port: int = 5201) -> None:
    """A full-speed TCP transfer each way at once between A (client) and B (server), for `seconds`."""
    host = pair.ip6_b if v6 else pair.ip4_b
    server = pair.popen(pair.ns_b, [PYTHON, "-c", BULK_SERVER, "server", host, str(port), str(seconds)],
                        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        pair.run(pair.ns_a, [PYTHON, "-c", BULK_SERVER, "client", host, str(port), str(seconds)],
                 timeout=seconds + 30)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
