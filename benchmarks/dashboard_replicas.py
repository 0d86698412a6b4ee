"""The dashboard across replicas on PostgreSQL (issue 19): what live updates and sessions in the database cost.

1. Live latency: an SSE client on replica B, incidents posted to replica A (LISTEN/NOTIFY), from the
   agent's 201 to the event on B; baselines in the same run: the client on A itself (the same NOTIFY
   path), and one server on SQLite (its in-process commit listener).
2. A signed-in page (`GET /commands`, a small page) and `/dash/api/.../series`: medians on replica B
   (session read from PostgreSQL) and on the SQLite server (session read from SQLite).
3. NOTIFY's cost on metric ingest: one process, batches of --batch add_metrics calls in one group
   commit (the database thread's unit) over --nodes nodes, with the announcement off and on, interleaved.

Starts a throwaway PostgreSQL (tests/pgcluster.py) and real server processes.

    .venv/bin/python benchmarks/dashboard_replicas.py
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.server.pg_store import PGStore  # noqa: E402
from floodwatch.server.web import live  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402
from tests.server.fwserver_util import Backend, Node, ServerProc, cli_inproc, incident_body, pg_backend  # noqa: E402


class Sse:
    """Reads /events in a thread; records when each incident id was first seen (perf_counter)."""

    def __init__(self, port: int, cookie: str) -> None:
        self.seen: dict[int, float] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", "/events", headers={"Cookie": f"fw_session={cookie}"})
        self.resp = self.conn.getresponse()
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import json

        event = ""
        try:
            while line := self.resp.fp.readline():
                text = line.decode().rstrip("\n")
                if text.startswith("retry:"):
                    self.ready.set()
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: ") and event == "incident":
                    self.seen.setdefault(json.loads(text[6:])["incident_id"], time.perf_counter())
        except (OSError, ValueError):
            return

    def wait(self, incident_id: int, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        while incident_id not in self.seen:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"incident {incident_id} not seen")
            time.sleep(0.0005)
        return self.seen[incident_id]


def login(srv: ServerProc, user: str, password: str) -> str:
    import re
    import urllib.parse

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/login", urllib.parse.urlencode({"username": user, "password": password}),
                 {"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    m = re.search(r"fw_session=([^;]+)", resp.getheader("Set-Cookie") or "")
    assert resp.status == 302 and m, resp.status
    return m.group(1)


def live_latency(post_to: ServerProc, sse: Sse, node: Node, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        r = post_to.post("incident", incident_body(), node)
        t = time.perf_counter()
        assert r.status == 201, r.raw
        out.append((sse.wait(r.json["incident_id"]) - t) * 1000)
    return out


def page_ms(srv: ServerProc, cookie: str, path: str, runs: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": f"fw_session={cookie}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, (path, resp.status)
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return statistics.median(times)


def notify_cost(url: str, password: str, nodes: int, batch: int, rounds: int) -> tuple[float, float]:
    """Median ms per group commit of `batch` add_metrics calls, announcement off and on."""
    store = PGStore(url, password)
    try:
        ids = [store.add_node(f"bench-{i}", f"bench-uuid-{i}", "h", 0.0)["node_id"] for i in range(nodes)]
        off: list[float] = []
        on: list[float] = []
        t0 = time.time()
        for r in range(rounds):
            for announce, into in ((None, off), (live.encode, on)):
                store.announce = announce
                chunk = [ids[(r * batch + k) % nodes] for k in range(batch)]
                t = time.perf_counter()
                with store.group():
                    for k, nid in enumerate(chunk):
                        store.add_metrics(nid, [{"recorded_at": t0 + r + k * 1e-3, "pps": 1000 + k, "bps": 8000}],
                                          t0)
                into.append((time.perf_counter() - t) * 1000)
        return statistics.median(off), statistics.median(on)
    finally:
        store.close()


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs):.1f} ms, p95 {xs[int(len(xs) * 0.95) - 1]:.1f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--nodes", type=int, default=2000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fw-dashrep-"))
    cluster = PgCluster().start()
    servers: list[ServerProc] = []
    try:
        pg = pg_backend(cluster, tmp)
        for name, backend in (("a", pg), ("b", pg), ("lite", Backend())):
            (tmp / name).mkdir()
            servers.append(ServerProc(tmp / name, backend=backend).start())
        a, b, lite = servers
        results: dict[str, Any] = {}
        for label, post_to, watch in (("PG, posted to A, client on B", a, b), ("PG, same process (A)", a, a),
                                      ("SQLite, one server", lite, lite)):
            password = cli_inproc("add-user", f"u{len(results)}", "--role", "viewer", *watch.store_args)["password"]
            cookie = login(watch, f"u{len(results)}", password)
            node = post_to.add_node(f"live-{len(results)}")
            sse = Sse(watch.port, cookie)
            sse.ready.wait(10)
            live_latency(post_to, sse, node, 5)  # warm up
            results[label] = live_latency(post_to, sse, node, args.runs)
            results[label + " pages"] = (page_ms(watch, cookie, "/commands", args.runs),
                                         page_ms(watch, cookie, f"/dash/api/nodes/{node.uuid}/series?range=1h",
                                                 args.runs))
        print(f"live latency, agent's 201 -> SSE event ({args.runs} incidents each):")
        for label in ("PG, posted to A, client on B", "PG, same process (A)", "SQLite, one server"):
            print(f"  {label}: {fmt(results[label])}; GET /commands {results[label + ' pages'][0]:.1f} ms, "
                  f"chart data {results[label + ' pages'][1]:.1f} ms (medians)")
        for srv in servers:
            srv.stop()
        servers = []
        off, on = notify_cost(cluster.new_database(), cluster.password, args.nodes, args.batch, args.rounds)
        print(f"group commit of {args.batch} add_metrics calls over {args.nodes} nodes (medians of {args.rounds}): "
              f"announcement off {off:.1f} ms, on {on:.1f} ms ({(on - off) / off * 100:+.1f} %)")
    finally:
        for srv in servers:
            srv.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
