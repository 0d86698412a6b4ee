"""CPU per agent request of the database thread's batches on PostgreSQL: the replica's side and PostgreSQL's.

A replica's database thread (floodwatch/server/dbthread.py) takes the queued store calls of many requests as
one batch, one transaction. This runs such batches, the fleet benchmark's mix of requests (per 60: 57 metrics
samples, 2 heartbeats, 1 GET /config, which is node_config and pending_commands), through the real DbWorker's
batch code on a throwaway PostgreSQL cluster (fsync on, 2,000 nodes) and measures the CPU time this process
used (the database thread's Python and libpq) and PostgreSQL's processes used, per request, for batches of
each size in --sizes (small batches: a quiet server; large: a busy one). CPU time, not wall time, so that it
means something on a machine shared with other work; a median of --rounds runs of --batches batches.
`--ref COMMIT` measures that commit's code first (git archive, a process of its own), then this checkout,
alternately --repeat times: a before/after in one run.

    .venv/bin/python benchmarks/server_db_batch.py --sizes 4,16,64 --ref main --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the source tree measured: this one, or `--tree DIR` (the baseline's, see --ref)
sys.path.insert(0, sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1]
                else str(Path(__file__).resolve().parent.parent))

from floodwatch.server import auth

NODES = 2000


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of PostgreSQL's postmaster and every process it started."""
    total = 0.0
    for pid in [postmaster, *_children(postmaster)]:
        try:
            f = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = f[f.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def requests(store: Any, start: int, n: int, t: float) -> list[tuple[Any, ...]]:
    """n requests' store calls (fn, args): the fleet's mix, nodes start.., one sample each at time t."""
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        node = (start + i) % NODES + 1
        if i % 60 == 59:  # GET /config
            out += [(store.node_config, (node,)), (store.pending_commands, (node, t))]
        elif i % 30 == 14:
            out.append((store.record_heartbeat, (node, {"agent_version": "1.0", "uptime": 50}, t)))
        else:
            sample = {"recorded_at": t + (i % 7) / 10, "pps": 1000 + i, "bps": 800_000, "tcp_pct": 60.0,
                      "udp_pct": 35.5, "icmp_pct": 4.5, "conn_count": 12}
            out.append((store.add_metrics, (node, [sample], t + 0.5)))
    return out


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from floodwatch.server.dbthread import DbWorker
    from floodwatch.server.pg_store import PGStore
    from tests.pgcluster import PgCluster

    cluster = PgCluster(durable=True).start()
    try:
        store = PGStore(cluster.new_database(), cluster.password)
        with store.group():
            for i in range(NODES):
                store.add_node(f"n{i}", auth.new_node_uuid(), "x", time.time())
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        from floodwatch.server.web import live

        store.announce = live.encode  # as the server on PostgreSQL (its dashboard's live pages, every replica)
        worker = DbWorker(store)
        loop = asyncio.new_event_loop()
        t = float(int(time.time()) - 86400)
        out: dict[str, dict[str, float]] = {}
        for size in (int(x) for x in args.sizes.split(",")):
            runs: list[tuple[float, float]] = []
            count = max(args.batches, args.requests // size)  # PostgreSQL's CPU is counted in clock ticks
            for _ in range(args.rounds + 1):  # the first: warm-up (prepared statements, caches)
                batches = []
                for b in range(count):
                    t += 1
                    calls = requests(store, b * size, size, t)
                    batches.append([(fn, a, loop.create_future(), loop) for fn, a in calls])
                c0, p0 = time.process_time(), cluster_cpu(postmaster)
                for batch in batches:
                    worker._run_batch(batch)
                c1, p1 = time.process_time(), cluster_cpu(postmaster)
                loop.run_until_complete(asyncio.sleep(0))  # the answers (outside the figures)
                bad = [f.exception() for batch in batches for _, _, f, _ in batch if f.exception()]
                if bad:
                    raise RuntimeError(f"a call failed: {bad[0]!r}")
                runs.append((c1 - c0, p1 - p0))
            n = count * size
            out[str(size)] = {"replica_us": round(1e6 * statistics.median(c for c, _ in runs[1:]) / n, 1),
                              "postgresql_us": round(1e6 * statistics.median(p for _, p in runs[1:]) / n, 1)}
        loop.close()
        store.close()
        return out
    finally:
        cluster.stop()


def compare(args: argparse.Namespace) -> dict[str, list[dict[str, dict[str, float]]]]:
    from tests.helpers import extract_commit

    ref_tree = extract_commit(args.ref, Path(tempfile.mkdtemp(prefix="fw-dbbatch-ref-")))
    out: dict[str, list[dict[str, dict[str, float]]]] = {"ref": [], "this": []}
    try:
        for _ in range(args.repeat):
            for label, tree in (("ref", ref_tree), ("this", Path(__file__).resolve().parent.parent)):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--tree", str(tree), "--json",
                       "--sizes", args.sizes, "--rounds", str(args.rounds), "--batches", str(args.batches),
                       "--requests", str(args.requests)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                out[label].append(json.loads(proc.stdout.splitlines()[-1]))
                print(f"# {label}: {out[label][-1]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(ref_tree, ignore_errors=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--sizes", default="4,16,64", help="requests per batch, comma-separated")
    p.add_argument("--batches", type=int, default=50, help="batches per run, at least")
    p.add_argument("--requests", type=int, default=4000, help="requests per run, at least")
    p.add_argument("--rounds", type=int, default=5, help="runs per size (median)")
    p.add_argument("--ref", default="", help="a commit to measure first, as the baseline (git archive)")
    p.add_argument("--repeat", type=int, default=1, help="with --ref: runs of each, alternately (medians)")
    p.add_argument("--tree", default="", help=argparse.SUPPRESS)  # read before the imports
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.json:
        print(json.dumps(measure(args)))
        return 0
    print(f"# load average {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    results = compare(args) if args.ref else {"this": [measure(args)]}
    print("| requests per batch | " + " | ".join(f"{label}: replica µs/req | {label}: PostgreSQL µs/req"
                                                for label in results) + " |")
    for size in args.sizes.split(","):
        cells = []
        for runs in results.values():
            for key in ("replica_us", "postgresql_us"):
                cells.append(f"{statistics.median(r[size][key] for r in runs):.0f}")
        print(f"| {size} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
