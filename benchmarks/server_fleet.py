"""Fleet scale (issue 19): how many agents the server serves with p99 < 200 ms and no error.

Simulated agents (benchmarks/fleet_agents.py, --procs processes, many agents each) speak the Agent API
with the reporter's own request shapes: one metrics sample a second, a heartbeat every 30 s, GET /config
every 60 s, and 1 % of them an incident with updates, each agent on its own keep-alive connection.

Setups:
  pg      two `floodwatch server` replicas on one PostgreSQL (fsync on, a throwaway cluster) behind nginx
          (tests/server/replicas.py)
  sqlite  one replica on SQLite (synchronous=FULL), clients straight to it

For each agent count in --agents (ascending, same servers, a pause between steps): latency p50/p99/max
over the measured window (after --warmup), errors, late ticks, and CPU (% of one core) of the replicas,
PostgreSQL (the postmaster and its backends), nginx and the load generator itself; the load average;
for PostgreSQL, what its active backends were waiting for (pg_stat_activity, sampled each second).

    .venv/bin/python benchmarks/server_fleet.py --setup pg --agents 500,1000,1500,2000 --duration 30
    .venv/bin/python benchmarks/server_fleet.py --setup sqlite --agents 500,1000 --duration 30
    .venv/bin/python benchmarks/server_fleet.py --setup pg --agents 300,1000,2000 --duration 20 --ref main

`--ref COMMIT` runs each step first on that commit's tree (git archive), then on this checkout, back to
back with fresh servers each: a before/after in one run on a shared machine. Per step it also gives the
replicas' CPU per request answered, and the part of it spent in their event-loop threads (the rest:
the database threads).
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.server import auth  # noqa: E402

GOAL_P99_MS = 200.0
AGENTS = Path(__file__).resolve().parent / "fleet_agents.py"


# -- measuring processes -------------------------------------------------------------------------------
def _stat(pid: int, tid: int | None = None) -> list[str]:
    """The fields after the name of /proc/PID/stat (or of one of its threads)."""
    with open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of a process and its children (pid -> seconds), the root with its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            f = _stat(pid)
            extra = (int(f[13]) + int(f[14])) if pid == root else 0
            out[pid] = (int(f[11]) + int(f[12]) + extra) / tick
            pending += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return out


STORAGE = "floodwatch_server_storage_operation_duration_seconds"


def storage_time(port: int) -> dict[str, float]:
    """Seconds the replica's database thread spent per store operation so far (its /metrics, loopback);
    {} (no figure) when it is not answered within 5 s: an overloaded replica's scrape waits behind its
    batches, and the step's measured window must not wait with it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode() if resp.status == 200 else ""  # not served: no figure
    except OSError:  # a time-out included
        text = ""
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(STORAGE + "_sum{"):
            op = line.split('operation="', 1)[1].split('"', 1)[0]
            out[op] = float(line.rsplit(" ", 1)[1])
    return out


def db_busy(before: list[dict[str, float]], after: list[dict[str, float]], elapsed: float) -> dict[str, Any]:
    """Per replica: the share of the time its database thread was working, and the top operations."""
    out: list[dict[str, Any]] = []
    for b, a in zip(before, after, strict=True):
        if not a or not b:
            out.append({"busy_pct": None, "top_s": {}})
            continue
        d = {op: a[op] - b.get(op, 0.0) for op in a}
        top = sorted(d.items(), key=lambda kv: -kv[1])[:3]
        out.append({"busy_pct": round(100 * sum(d.values()) / elapsed, 1),
                    "top_s": {op: round(v, 2) for op, v in top}})
    return {"db_thread": out}


def thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (a replica's event loop; its database thread is another)."""
    try:
        f = _stat(pid, pid)
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def per_request_us(cpu_pct: float | None, req_per_s: float) -> float | None:
    """CPU % of one core over a step -> microseconds of CPU per request answered."""
    return round(cpu_pct * 1e4 / req_per_s) if cpu_pct is not None and req_per_s else None


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({model}), kernel {os.uname().release}"


# -- the setups ----------------------------------------------------------------------------------------
class Setup:
    """The servers under test: `port` for the agents, `components()` name -> root pids to measure."""

    port: int
    kind: str
    replica_ports: list[int]

    def components(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def waits(self) -> Counter[str]:
        return Counter()

    def stop(self) -> None:
        raise NotImplementedError


def make_nodes(store: Any, n: int) -> list[dict[str, str]]:
    nodes = []
    now = time.time()
    with store.group():
        for i in range(n):
            key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
            store.add_node(f"fleet-{i}", node_uuid, auth.hash_secret(key), now)
            nodes.append({"Authorization": f"Bearer {key}", "X-Node-UUID": node_uuid})
    return nodes


class PgSetup(Setup):
    kind = "pg"

    def __init__(self, n: int, replicas: int, nginx_workers: int, durable: bool = True) -> None:
        from floodwatch.server.pg_store import PGStore
        from tests.pgcluster import PgCluster
        from tests.server.fwserver_util import pg_backend
        from tests.server.replicas import Replicas

        self.cluster = PgCluster(durable=durable).start()
        self.fleet: Any = None
        try:
            backend = pg_backend(self.cluster, self.cluster.dir)
            store = PGStore(backend.url, self.cluster.password)
            self.nodes = make_nodes(store, n)
            store.close()
            self.fleet = Replicas(backend, replicas, nginx_workers=nginx_workers, access_log=False).start()
        except BaseException:
            self.stop()
            raise
        self.port = self.fleet.nginx.port
        self.replica_ports = self.fleet.ports

    def components(self) -> dict[str, list[int]]:
        assert self.fleet is not None and self.fleet.nginx.proc is not None
        postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        return {"replicas": [s.proc.pid for s in self.fleet.servers if s.proc], "postgresql": [postmaster],
                "nginx": [self.fleet.nginx.proc.pid]}

    def waits(self) -> Counter[str]:
        out = self.cluster.psql("SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') "
                                "FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' "
                                "AND pid <> pg_backend_pid()")
        return Counter(line for line in out.splitlines() if line)

    def stop(self) -> None:
        try:
            if self.fleet is not None:
                self.fleet.stop()
        finally:
            self.cluster.stop()


class SqliteSetup(Setup):
    kind = "sqlite"

    def __init__(self, n: int) -> None:
        from floodwatch.server.sqlite_store import SQLiteStore
        from tests.server.fwserver_util import ServerProc

        self.tmp = tempfile.TemporaryDirectory(prefix="fw-fleet-")
        d = Path(self.tmp.name)
        store = SQLiteStore(d / "server.db")
        self.nodes = make_nodes(store, n)
        store.close()
        # a fleet straight to one process: one connection per agent, all from this machine's address
        caps = ["--max-connections", "10000", "--max-connections-per-address", "10000"]
        self.server = ServerProc(d, caps).start()
        self.port = self.server.port
        self.replica_ports = [self.server.port]

    def components(self) -> dict[str, list[int]]:
        assert self.server.proc is not None
        return {"replicas": [self.server.proc.pid]}

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.tmp.cleanup()


# -- one step: N agents --------------------------------------------------------------------------------
def run_step(setup: Setup, agents: int, args: argparse.Namespace) -> dict[str, Any]:
    nodes = setup.nodes[:agents]  # type: ignore[attr-defined]
    procs = max(1, min(args.procs, agents))
    start = time.time() + 2.0
    workers = []
    for i in range(procs):
        spec = {"host": "127.0.0.1", "port": setup.port, "nodes": nodes[i::procs], "start": start,
                "warmup": args.warmup, "duration": args.duration, "seed": i, "heartbeat_interval": 30.0,
                "config_interval": 60.0}
        p = subprocess.Popen([sys.executable, str(AGENTS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
        assert p.stdin is not None
        p.stdin.write(json.dumps(spec).encode())
        p.stdin.close()
        workers.append(p)
    time.sleep(max(0.0, start + args.warmup - time.time()))
    comps = {**setup.components(), "load generator": [p.pid for p in workers]}
    storage0 = [storage_time(p) for p in setup.replica_ports]
    before = {name: {r: tree_cpu(r) for r in roots} for name, roots in comps.items()}
    loops0 = {r: thread_cpu(r) for r in comps["replicas"]}
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    waits: Counter[str] = Counter()
    end = start + args.warmup + args.duration
    while time.time() < end - 1:
        waits += setup.waits()
        time.sleep(1.0)
    after = {name: {r: tree_cpu(r) for r in roots} for name, roots in comps.items()}
    loops = sum(thread_cpu(r) - loops0[r] for r in comps["replicas"])
    elapsed, load1 = time.monotonic() - t0, os.getloadavg()[0]
    storage = db_busy(storage0, [storage_time(p) for p in setup.replica_ports], elapsed)
    outs = [_result(p, args.duration + 120) for p in workers]
    lat = sorted(x for o in outs for x in o["latencies"])
    lag = sorted(x for o in outs for x in o["lag"])
    errors: Counter[str] = Counter()
    for o in outs:
        errors.update(o["errors"])
    cpu = {name: round(100 * sum(cpu_delta(before[name][r], after[name][r]) for r in roots) / elapsed, 1)
           for name, roots in comps.items()}
    cpu["replica event loops"] = round(100 * loops / elapsed, 1)
    rate = round(len(lat) / args.duration, 1)
    return {"setup": setup.kind, "agents": agents, "load_procs": procs, "requests": len(lat),
            "req_per_s": rate, "errors": sum(errors.values()),
            "replica_us_per_request": per_request_us(cpu["replicas"], rate),
            "event_loop_us_per_request": per_request_us(cpu["replica event loops"], rate),
            "error_kinds": dict(errors), "late_ticks": sum(o["late"] for o in outs),
            "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "max_ms": round(lat[-1], 1) if lat else None, "generator_lag_p99_ms": round(pct(lag, 0.99), 1),
            "cpu_pct_of_one_core": cpu, "loadavg_1m": [round(load0, 2), round(load1, 2)],
            "pg_active_waits": dict(waits.most_common(6)), **storage,
            "ok": bool(lat) and pct(lat, 0.99) < GOAL_P99_MS and not errors}


def _result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout)
    return dict(json.loads(out))


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def server_switch_interval(seconds: float) -> None:
    """An experiment: the servers started from now on run with this GIL switch interval (Python's default
    is 5 ms: a database thread woken by PostgreSQL's answer may wait that long for the event loop's
    thread). Through a sitecustomize module on the servers' PYTHONPATH; the code is not changed."""
    d = Path(tempfile.mkdtemp(prefix="fw-switch-"))
    atexit.register(shutil.rmtree, d, True)
    (d / "sitecustomize.py").write_text(f"import sys\nsys.setswitchinterval({seconds!r})\n")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(d), os.environ.get("PYTHONPATH", "")]))


def line(r: dict[str, Any], label: str = "") -> str:
    """One step's result as a line (also a --ref tree's JSON, whose script may not know every figure)."""
    cpu = r["cpu_pct_of_one_core"]
    us = per_request_us(cpu.get("replicas"), r["req_per_s"])
    loop_us = per_request_us(cpu.get("replica event loops"), r["req_per_s"])
    others = " ".join(f"{short}={per_request_us(cpu[name], r['req_per_s'])}us" for name, short in
                      (("postgresql", "pg"), ("nginx", "nginx"), ("load generator", "generator")) if name in cpu)
    return (f"{label}{r['setup']:<6} {r['agents']:>5} agents: {r['req_per_s']:>7}/s errors={r['errors']} "
            f"late={r['late_ticks']} p50={r['p50_ms']}ms p99={r['p99_ms']}ms max={r['max_ms']}ms "
            f"lag99={r['generator_lag_p99_ms']}ms replica_cpu/req={us}us (event loops {loop_us}us) "
            f"per request: {others} cpu={cpu} "
            f"load={r['loadavg_1m']} waits={r['pg_active_waits']} db={r['db_thread']} "
            f"{'OK' if r['ok'] else 'OVER'} {r['error_kinds'] or ''}")


def compare(args: argparse.Namespace, argv: list[str]) -> int:
    """--ref: each agent count on the other commit's tree (git archive: its server, nginx config and load
    generator), then on this checkout, back to back, each with fresh servers; the same other options."""
    from tests.helpers import extract_commit

    ref_tree = extract_commit(args.ref, Path(tempfile.mkdtemp(prefix="fw-fleet-ref-")))
    try:
        for n in sorted(int(x) for x in args.agents.split(",")):
            for label, tree in ((f"ref {args.ref}", ref_tree), ("this checkout", REPO)):
                out = subprocess.run([sys.executable, str(tree / "benchmarks" / "server_fleet.py"), *argv,
                                      "--agents", str(n), "--json"], cwd=tree, capture_output=True, text=True)
                results = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
                for r in results:
                    print(json.dumps({"tree": label, **r}) if args.json else line(r, f"{label:<14} "), flush=True)
                if not results:
                    print(f"{label}: {n} agents failed: {out.stderr[-2000:]}", flush=True)
                time.sleep(args.pause)
    finally:
        shutil.rmtree(ref_tree, ignore_errors=True)
    return 0


def _passed_on(argv: list[str]) -> list[str]:
    """The command line for each tree of --ref: without --ref, --agents and --json (set per run)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--ref", "--agents"):
            skip = True
        elif a != "--json" and not a.startswith(("--ref=", "--agents=")):
            out.append(a)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--setup", choices=("pg", "sqlite"), required=True)
    p.add_argument("--agents", default="500,1000,2000", help="agent counts, ascending, comma-separated")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (connections, caches)")
    p.add_argument("--pause", type=float, default=5.0, help="seconds between steps")
    p.add_argument("--procs", type=int, default=2, help="load generator processes")
    p.add_argument("--replicas", type=int, default=2, help="pg: server replicas behind nginx")
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--pg-no-fsync", action="store_true", help="pg: fsync off (to see what durability costs)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="experiment: the servers' GIL switch interval in seconds (Python's default 0.005)")
    p.add_argument("--stop-at-failure", action="store_true", help="stop after the first step over the goal")
    p.add_argument("--ref", default="", help="a commit (e.g. main) to run each step on first, as the baseline, "
                   "then this checkout: fresh servers for every step")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    counts = sorted(int(x) for x in args.agents.split(","))
    print(f"# {machine()}; load average {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
          flush=True)
    if args.ref:
        return compare(args, _passed_on(sys.argv[1:]))
    if args.switch_interval:
        server_switch_interval(args.switch_interval)
    setup: Setup = (PgSetup(counts[-1], args.replicas, args.nginx_workers, not args.pg_no_fsync) if args.setup == "pg"
                    else SqliteSetup(counts[-1]))
    try:
        for n in counts:
            r = run_step(setup, n, args)
            print(json.dumps(r) if args.json else line(r), flush=True)
            if args.stop_at_failure and not r["ok"]:
                break
            time.sleep(args.pause)
    finally:
        setup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
