"""What one agent request costs in the server's database thread, PostgreSQL against SQLite (same run).

The server runs every store call in one thread (floodwatch/server/dbthread.py), many per transaction
(group commit), so a replica serves at most 1 / (cost of a call) requests a second, whatever its CPU.
This times the calls a fleet makes most, in groups of --group calls (one transaction, each call in its
savepoint, as the database thread does), on a throwaway PostgreSQL cluster (fsync on, as in production;
tests/pgcluster.py) and on SQLite (synchronous=FULL), and prints the median per call of --rounds groups;
and the same number of samples stored by one add_metrics_many call of --group one-sample calls (what the
database thread does with a batch's metrics requests) and by one add_metrics call; and the batched forms
of node_auth and record_heartbeat that the database thread uses for a batch's calls (one statement).
`--ref COMMIT` also measures that commit's code (extracted with `git archive`, run by this script in a
process of its own) for a baseline in the same run: `--repeat N` times each, alternately, medians shown.

    .venv/bin/python benchmarks/server_store_calls.py --rounds 20 --group 100 [--ref main --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# the source tree measured: this one, or `--tree DIR` (the baseline's, see --ref)
sys.path.insert(0, sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1]
                else str(Path(__file__).resolve().parent.parent))

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
    out["add_metrics_many, 1 sample a call (/sample)"] = _many(store, nodes, rng, t + 2 * args.rounds * args.group,
                                                               args)
    t0 = time.perf_counter()
    for _ in range(args.group):
        store.node_auth("no-such-node")  # alone: its own transaction, as on an auth cache miss
    out["node_auth (own transaction)"] = round((time.perf_counter() - t0) * 1000 / args.group, 3)
    out.update(batched_forms(store, args, t))
    return out


def batched_forms(store: Any, args: argparse.Namespace, t: float) -> dict[str, float]:
    """node_auth_many and record_heartbeat_many of --group calls, in a transaction: ms per call."""
    uuids = [(n["node_uuid"],) for n in store.list_nodes(t, 90)[:args.group]]
    hbs = [(n["node_id"], {"agent_version": "1", "uptime": 5}, t) for n in store.list_nodes(t, 90)[:args.group]]
    out = {}
    for name, batch in (("node_auth", uuids), ("record_heartbeat", hbs)):
        fn = getattr(store, f"{name}_many", None)
        if fn is None:  # a --ref tree from before them
            continue
        per_call = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with store.group():
                fn(batch)
            per_call.append((time.perf_counter() - t0) * 1000 / len(batch))
        out[f"{name}, all in 1 call (/call)"] = round(statistics.median(per_call), 3)
    return out


def _many(store: Any, nodes: list[int], rng: random.Random, t: float, args: argparse.Namespace) -> float:
    """Median ms per sample of add_metrics_many with one one-sample call per node (the database thread's
    coalesced batch of metrics requests), one transaction per round."""
    per_sample = []
    for r in range(args.rounds):
        calls = []
        for node in nodes:
            sample = mapping.metrics_sample(traffic_second(t + r, rng))
            sample["recorded_at"] = mapping.parse_iso(sample["recorded_at"])
            calls.append((node, [sample], time.time()))
        t0 = time.perf_counter()
        with store.group():
            store.add_metrics_many(calls)
        per_sample.append((time.perf_counter() - t0) * 1000 / len(calls))
    return round(statistics.median(per_sample), 3)


def both(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{"PostgreSQL": ms per call, "SQLite": ms per call} of the tree this process imported."""
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
    return {"PostgreSQL": pg_ms, "SQLite": sq_ms}


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """`both` on a tree's code: this script in a process of its own, with --tree."""
    out = subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--group", str(args.group),
                          "--json", "--tree", str(tree)], check=True, capture_output=True, text=True).stdout
    result: dict[str, dict[str, float]] = json.loads(out.splitlines()[-1])
    return result


def compare(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Commit `--ref` and this tree measured alternately `--repeat` times: the median of each figure."""
    from tests.helpers import extract_commit

    trees = {f"ref {args.ref}": extract_commit(args.ref, Path(tempfile.mkdtemp(prefix="fw-calls-ref-"))),
             "this tree": Path(__file__).resolve().parent.parent}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    try:
        for _ in range(args.repeat):
            for name, tree in trees.items():
                runs[name].append(run_tree(tree, args))
    finally:
        shutil.rmtree(trees[f"ref {args.ref}"], ignore_errors=True)
    return {name: {db: {call: round(statistics.median(r[db][call] for r in done), 3) for call in done[0][db]}
                   for db in done[0]} for name, done in runs.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--group", type=int, default=100, help="calls per transaction (the database thread's batch)")
    p.add_argument("--ref", default="", help="a commit to measure first, as the baseline (git archive)")
    p.add_argument("--tree", default="", help=argparse.SUPPRESS)  # read before the imports
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=1, help="with --ref: runs of each, alternately (medians)")
    args = p.parse_args()
    if args.json:
        print(json.dumps(both(args)))
        return 0
    runs = compare(args) if args.ref else {"this tree": both(args)}
    names = list(runs["this tree"]["PostgreSQL"])
    cols = [(run, db) for db in ("PostgreSQL", "SQLite") for run in runs]
    print(f"# ms per call, median of {args.rounds} transactions of {args.group} calls"
          + (f"; median of {args.repeat} alternate runs each" if args.ref else ""))
    print(f"{'call':<44}" + "".join(f" {db + ' ' + run:>24}" for run, db in cols))
    for name in names:
        print(f"{name:<44}" + "".join(f" {runs[run][db].get(name, '-'):>24}" for run, db in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
