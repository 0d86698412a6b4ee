"""Latency from `incident.opened` on the bus to the embedded server having stored the incident (loopback).

Real parts: the bus proxy (tests.helpers.BusHarness), the reporter actor as a process, the embedded
server as a process with its SQLite database (synchronous=FULL). For each incident the benchmark
publishes an IncidentOpened and polls the server's database until the row is there (the server commits
before it answers, so a row means stored). Baseline in the same run: the same incident body POSTed
straight to the server by this process (no bus, no outbox), i.e. the server's own share of the time.

    .venv/bin/python benchmarks/reporter_latency.py --runs 3 --incidents 100
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floodwatch.reporter.mapping import incident_body
from tests.helpers import BusHarness, tcp_endpoints
from tests.reporter.support import ServerProc, reporter, reporter_settings
from tests.reporter.test_reporter_logic import incident


def wait_stored(db: sqlite3.Connection, key: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if db.execute("SELECT 1 FROM incidents WHERE incident_key = ?", (key,)).fetchone():
            return time.perf_counter()
        time.sleep(0.0002)
    raise TimeoutError(f"incident {key} not stored within {timeout} s")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run_once(tmp: Path, n: int, run: int) -> tuple[list[float], list[float]]:
    (tmp / f"r{run}").mkdir()
    srv = ServerProc(tmp / f"server{run}")
    uuid, key = srv.add_node()
    srv.start()
    db = sqlite3.connect(srv.db)
    via_reporter, direct = [], []
    try:
        with BusHarness(tcp_endpoints()) as harness, \
                reporter(tmp / f"r{run}", harness, reporter_settings(srv.url, key, uuid, config_interval=60.0,
                                                                     heartbeat_interval=30.0)) as rp:
            rp.wait_drained()
            for i in range(n):
                k = f"bench-{run}-{i}"
                t0 = time.perf_counter()
                harness.publish(incident(key=k))
                via_reporter.append((wait_stored(db, k) - t0) * 1000)
            for i in range(n):  # baseline: the same body, straight to the server
                body = incident_body(incident(key=f"direct-{run}-{i}"))
                req = urllib.request.Request(f"{srv.url}/incident", data=json.dumps(body).encode(), method="POST",
                                             headers={"Authorization": f"Bearer {key}", "X-Node-UUID": uuid,
                                                      "Content-Type": "application/json"})
                t0 = time.perf_counter()
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
                direct.append((wait_stored(db, f"direct-{run}-{i}") - t0) * 1000)
    finally:
        db.close()
        srv.stop()
    return via_reporter, direct


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--incidents", type=int, default=100)
    args = ap.parse_args()
    (tmp_root := Path(tempfile.mkdtemp(prefix="fw-reporter-bench-"))).chmod(0o700)
    medians, p99s, base_medians, base_p99s = [], [], [], []
    for run in range(args.runs):
        rep, base = run_once(tmp_root, args.incidents, run)
        medians.append(statistics.median(rep))
        p99s.append(pct(rep, 99))
        base_medians.append(statistics.median(base))
        base_p99s.append(pct(base, 99))
        print(f"run {run + 1}: bus->stored median {medians[-1]:.2f} ms p99 {p99s[-1]:.2f} ms | "
              f"direct POST median {base_medians[-1]:.2f} ms p99 {base_p99s[-1]:.2f} ms", flush=True)
    print(f"\nmedian of {args.runs} runs x {args.incidents} incidents: incident.opened -> stored: "
          f"median {statistics.median(medians):.2f} ms, p99 {statistics.median(p99s):.2f} ms; "
          f"baseline direct POST -> stored: median {statistics.median(base_medians):.2f} ms, "
          f"p99 {statistics.median(base_p99s):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
