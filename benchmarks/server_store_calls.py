"""What one agent request costs in the server's database thread, PostgreSQL against SQLite (same run).

The server runs every store call in one thread (floodwatch/server/dbthread.py), many per transaction
(group commit), so a replica serves at most 1 / (cost of a call) requests a second, whatever its CPU.
This times the calls a fleet makes most, in groups of --group calls (one transaction, each call in its
savepoint, as the database thread does), on a throwaway PostgreSQL cluster (fsync on, as in production;
tests/pgcluster.py) and on SQLite (synchronous=FULL), and prints the median per call of --rounds groups;
and, for comparison, the same number of samples stored by one add_metrics call (what coalescing the
requests of a batch into one COPY would cost).

    .venv/bin/python benchmarks/server_store_calls.py --rounds 20 --group 100
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_agents import traffic_second
from floodwatch.reporter import mapping
from floodwatch.server import auth


def calls(store: Any, nodes: list[int], rng: random.Random, t: float) -> dict[str, Callable[[int], Any]]:
    def metrics(node: int) -> Any:
        sample = mapping.metrics_sample(traffic_second(t, rng))
        sample["recorded_at"] = mapping.parse_iso(sample["recorded_at"])
        return store.add_metrics(node, [sample], time.time())

    return {"add_metrics": metrics,
            "record_heartbeat": lambda node: store.record_heartbeat(node, {"agent_version": "1", "uptime": 5}, t),
            "node_config": lambda node: store.node_config(node),
            "pending_commands": lambda node: store.pending_commands(node, t)}


def measure(store: Any, args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per call, commit included, for each kind of call."""
    with store.group():
        nodes = [store.add_node(f"n{i}", auth.new_node_uuid(), "x", time.time())["node_id"]
                 for i in range(args.group)]
    rng = random.Random(1)
    out: dict[str, float] = {}
    t = float(int(time.time()))
    for name in ("add_metrics", "record_heartbeat", "node_config", "pending_commands"):
        per_call = []
        for r in range(args.rounds):
            fn = calls(store, nodes, rng, t + r)[name]
            t0 = time.perf_counter()
            with store.group():
                for node in nodes:
                    fn(node)
            per_call.append((time.perf_counter() - t0) * 1000 / len(nodes))
        out[name] = round(statistics.median(per_call), 3)
    per_sample = []
    for r in range(args.rounds):  # what batching across requests would cost: one call, `group` samples
        samples = []
        for k in range(args.group):
            sample = mapping.metrics_sample(traffic_second(t + args.rounds + r * args.group + k, rng))
            sample["recorded_at"] = mapping.parse_iso(sample["recorded_at"])
            samples.append(sample)
        t0 = time.perf_counter()
        with store.group():
            store.add_metrics(nodes[0], samples, time.time())
        per_sample.append((time.perf_counter() - t0) * 1000 / args.group)
    out["add_metrics, all in 1 call (/sample)"] = round(statistics.median(per_sample), 3)
    t0 = time.perf_counter()
    for _ in range(args.group):
        store.node_auth("no-such-node")  # alone: its own transaction, as on an auth cache miss
    out["node_auth (own transaction)"] = round((time.perf_counter() - t0) * 1000 / args.group, 3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--group", type=int, default=100, help="calls per transaction (the database thread's batch)")
    args = p.parse_args()
    from floodwatch.server.pg_store import PGStore
    from floodwatch.server.sqlite_store import SQLiteStore
    from tests.pgcluster import PgCluster

    cluster = PgCluster(durable=True).start()
    try:
        pg = PGStore(cluster.new_database(), cluster.password)
        pg_ms = measure(pg, args)
        pg.close()
    finally:
        cluster.stop()
    with tempfile.TemporaryDirectory(prefix="fw-calls-") as d:
        sq = SQLiteStore(Path(d) / "server.db", "FULL")
        sq_ms = measure(sq, args)
        sq.close()
    print(f"# ms per call, median of {args.rounds} transactions of {args.group} calls")
    print(f"{'call':<38} {'PostgreSQL':>11} {'SQLite':>9}")
    for name in pg_ms:
        print(f"{name:<38} {pg_ms[name]:>11} {sq_ms[name]:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
