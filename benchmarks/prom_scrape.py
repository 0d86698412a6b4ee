"""What a Prometheus scrape of the server costs at fleet size.

A database with --nodes nodes (all seen, each with a few metrics samples), --busy nodes with
--samples samples each, and --incidents incidents (--active-pct of them not resolved, over the seven
standard families plus 60 custom ones, so the family cap applies). Then, against the real server
(`python -m floodwatch.server`): GET /metrics and, as the baseline of the same run, GET /api/v1/health,
--runs times each, one at a time on one keep-alive connection; medians and p90.

    .venv/bin/python benchmarks/prom_scrape.py --nodes 1000 --incidents 100000 --busy 20 --samples 100000
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.server.sqlite_store import SQLiteStore  # noqa: E402
from floodwatch.server.validate import FAMILIES  # noqa: E402
from tests.helpers import PYTHON, eventually, stop_process  # noqa: E402


def fill(db: Path, a: argparse.Namespace) -> None:
    store = SQLiteStore(db, "OFF")
    now = time.time()
    conn = store.conn
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO nodes (id, uuid, name, key_hash, created_at, last_seen_at) VALUES (?,?,?,?,?,?)",
                     [(i, f"uuid-{i}", f"node-{i:05d}", "x", now, now - random.uniform(0, 300))
                      for i in range(1, a.nodes + 1)])
    rows = []
    for node in range(1, a.nodes + 1):
        n = a.samples if node <= a.busy else 5
        rows += [(node, now - n + k, now, random.randint(0, 10**6), random.randint(0, 10**9)) for k in range(n)]
        if len(rows) > 200_000:
            conn.executemany("INSERT INTO metrics (node_id, recorded_at, received_at, pps, bps) VALUES (?,?,?,?,?)",
                             rows)
            rows = []
    conn.executemany("INSERT INTO metrics (node_id, recorded_at, received_at, pps, bps) VALUES (?,?,?,?,?)", rows)
    conn.execute("INSERT INTO node_latest SELECT node_id, recorded_at, pps, bps FROM metrics "
                 "WHERE id IN (SELECT MAX(id) FROM metrics GROUP BY node_id)")  # what the server keeps as it goes
    families = sorted(FAMILIES) + [f"custom_{i}" for i in range(60)]
    conn.executemany(
        "INSERT INTO incidents (node_id, incident_key, status, attack_family, severity, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?)",
        [(random.randint(1, a.nodes), f"k{i}", "active" if random.random() * 100 < a.active_pct else "resolved",
          random.choice(families), "high", now, now) for i in range(a.incidents)])
    conn.execute("COMMIT")
    store.close()


def timed_gets(port: int, path: str, runs: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200, (resp.status, body[:200])
    conn.close()
    return out


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {1000 * statistics.median(xs):7.2f} ms  p90 {1000 * xs[int(0.9 * (len(xs) - 1))]:7.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--busy", type=int, default=20)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--incidents", type=int, default=100_000)
    ap.add_argument("--active-pct", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db, port_file = Path(d) / "server.db", Path(d) / "port"
        t0 = time.monotonic()
        fill(db, a)
        print(f"filled in {time.monotonic() - t0:.0f} s: {a.nodes} nodes, {a.busy} x {a.samples} samples, "
              f"{a.incidents} incidents ({a.active_pct:g} % active); {os.cpu_count()} cores")
        proc = subprocess.Popen([PYTHON, "-m", "floodwatch.server", "--listen", "127.0.0.1:0", "--db", str(db),
                                 "--port-file", str(port_file)], cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            eventually(lambda: port_file.exists() and port_file.read_text().strip().isdigit(), 120)
            port = int(port_file.read_text())
            size = len(timed_gets(port, "/metrics", 1) and http_body(port))
            for label, path in (("GET /api/v1/health (baseline)", "/api/v1/health"), ("GET /metrics", "/metrics")):
                print(f"{label:<30} {fmt(timed_gets(port, path, a.runs))}  ({a.runs} runs)")
            print(f"/metrics body: {size} bytes; of which the database thread's fleet_overview: "
                  f"mean {1000 * overview_seconds(http_body(port)):.2f} ms (its own histogram)")
        finally:
            stop_process(proc, 30)
    return 0


def overview_seconds(body: bytes) -> float:
    """Mean fleet_overview time, from the server's own storage histogram."""
    found = {}
    for line in body.decode().splitlines():
        for part in ("_sum", "_count"):
            name = f"floodwatch_server_storage_operation_duration_seconds{part}"
            if line.startswith(name + '{operation="fleet_overview"}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found["_sum"] / found["_count"]


def http_body(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    conn.close()
    return body


if __name__ == "__main__":
    sys.exit(main())
