"""Load on the embedded Agent API server: N simulated agents, each POSTing a metrics sample every second,
a heartbeat every --heartbeat-interval seconds and a GET /config every --config-interval seconds, each on
its own keep-alive connection, for --duration seconds.

Reports request latency (p50/p90/p99/max), errors, late ticks, and the server process's CPU and RSS.
The baseline, measured in the same run, is a bare aiohttp server answering the same routes with a
constant, without parsing, auth or storage (--no-baseline to skip it).

    .venv/bin/python benchmarks/server_load.py --agents 200 --duration 60 --max-connections-per-address 1000

All agents connect from 127.0.0.1: past 100 agents, raise the server's per-address cap (default 100) or
the extra connections are refused (503), as they would be for a fleet behind one NAT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.server import auth  # noqa: E402
from floodwatch.server.sqlite_store import SQLiteStore  # noqa: E402

BARE = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.json_response({"ok": True})
app = web.Application()
for p in ("heartbeat", "metrics", "incident", "commands/ack"):
    app.router.add_post("/api/v1/agent/" + p, ok)
app.router.add_get("/api/v1/agent/config", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *a: print("ready", flush=True))
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_nodes(db: Path, n: int) -> list[dict[str, str]]:
    store = SQLiteStore(db)
    nodes = []
    for i in range(n):
        key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
        store.add_node(f"bench-{i}", node_uuid, auth.hash_secret(key), time.time())
        nodes.append({"Authorization": f"Bearer {key}", "X-Node-UUID": node_uuid})
    store.close()
    return nodes


def start_server(kind: str, workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int, list]:
    port = free_port()
    log = open(workdir / f"{kind}.log", "wb")  # noqa: SIM115
    if kind == "bare":
        proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)], stdout=log, stderr=subprocess.STDOUT)
        nodes = [{"Authorization": "Bearer x", "X-Node-UUID": secrets.token_hex(8)} for _ in range(args.agents)]
    else:
        db = workdir / "server.db"
        nodes = make_nodes(db, args.agents)
        cap = ["--max-connections-per-address", str(args.max_connections_per_address)] \
            if args.max_connections_per_address else []
        proc = subprocess.Popen([sys.executable, "-m", "floodwatch.server", "--listen", f"127.0.0.1:{port}",
                                 "--db", str(db), "--synchronous", args.synchronous, *cap],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, nodes
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{kind} server did not start; see {workdir / (kind + '.log')}")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.late_ticks = 0
        self.requests = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def agent(base: str, headers: dict[str, str], stats: Stats, end: float, args: argparse.Namespace) -> None:
    rng = random.Random(headers["X-Node-UUID"])
    start = time.monotonic() + rng.random()  # agents spread over the first second
    hb_next = start + rng.random() * args.heartbeat_interval
    cfg_next = start + rng.random() * args.config_interval
    tick = 0
    conn = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=base, headers=headers, connector=conn, timeout=timeout) as session:
        while True:
            due = start + tick
            if due >= end:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5:
                stats.late_ticks += 1
            tick += 1
            now = time.time()
            sample = {"pps": rng.randrange(1000, 90000), "bps": rng.randrange(10**6, 10**9), "tcp_pct": 60.0,
                      "udp_pct": 38.5, "icmp_pct": 1.5, "conn_count": rng.randrange(100, 5000),
                      "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
            await call(session, "POST", "metrics", sample, stats)
            if time.monotonic() >= hb_next:
                hb_next += args.heartbeat_interval
                await call(session, "POST", "heartbeat", {"agent_version": "0.1.0", "uptime": tick, "os": "bench"},
                           stats)
            if time.monotonic() >= cfg_next:
                cfg_next += args.config_interval
                await call(session, "GET", "config", None, stats)


async def call(session: aiohttp.ClientSession, method: str, path: str, body: Any, stats: Stats) -> None:
    t0 = time.perf_counter()
    try:
        async with session.request(method, f"/api/v1/agent/{path}", json=body) as resp:
            await resp.read()
            if resp.status >= 300:
                stats.error(f"{path} {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as e:
        stats.error(f"{path} {type(e).__name__}")
    stats.latencies.append(time.perf_counter() - t0)
    stats.requests += 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def drive(port: int, nodes: list[dict[str, str]], args: argparse.Namespace) -> Stats:
    stats = Stats()
    end = time.monotonic() + 1 + args.duration
    await asyncio.gather(*(agent(f"http://127.0.0.1:{port}", h, stats, end, args) for h in nodes))
    return stats


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fwbench-") as tmp:
        proc, port, nodes = start_server(kind, Path(tmp), args)
        try:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            stats = asyncio.run(drive(port, nodes, args))
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            rss = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
    lat = [x * 1000 for x in stats.latencies]
    return {"server": kind, "agents": args.agents, "duration_s": args.duration, "requests": stats.requests,
            "req_per_s": round(stats.requests / (t1 - t0), 1), "errors": sum(stats.errors.values()),
            "error_kinds": stats.errors, "late_ticks": stats.late_ticks,
            "p50_ms": round(pct(lat, 0.50), 2), "p90_ms": round(pct(lat, 0.90), 2),
            "p99_ms": round(pct(lat, 0.99), 2), "max_ms": round(max(lat, default=0), 2),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "server_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "server_rss_mb": round(rss, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--heartbeat-interval", type=float, default=30.0)
    p.add_argument("--config-interval", type=float, default=60.0)
    p.add_argument("--synchronous", default="FULL", help="the server's SQLite synchronous mode")
    p.add_argument("--max-connections-per-address", type=int, default=None,
                   help="the server's cap (default 100): every simulated agent connects from 127.0.0.1")
    p.add_argument("--runs", type=int, default=1, help="repeat and report each run plus the median")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare aiohttp baseline")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    kinds = ["floodwatch"] + ([] if args.no_baseline else ["bare"])
    results = [run_one(kind, args) for _ in range(args.runs) for kind in kinds]
    for r in results:
        print(json.dumps(r) if args.json else
              f"{r['server']:<10} {r['agents']} agents {r['duration_s']:.0f}s: {r['requests']} req "
              f"({r['req_per_s']}/s) errors={r['errors']} late={r['late_ticks']} p50={r['p50_ms']}ms "
              f"p99={r['p99_ms']}ms max={r['max_ms']}ms cpu={r['server_cpu_pct_of_one_core']}% "
              f"rss={r['server_rss_mb']}MB", flush=True)
    if args.runs > 1:
        for kind in kinds:
            rs = [r for r in results if r["server"] == kind]
            print(f"median {kind}: p50={statistics.median(r['p50_ms'] for r in rs)}ms "
                  f"p99={statistics.median(r['p99_ms'] for r in rs)}ms "
                  f"cpu={statistics.median(r['server_cpu_pct_of_one_core'] for r in rs)}%")
    return 1 if any(r["errors"] for r in results if r["server"] == "floodwatch") else 0


if __name__ == "__main__":
    sys.exit(main())
