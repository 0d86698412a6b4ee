"""Cost of the whole agent under a flood, as a user runs it (issue 17).

`floodwatch run` with the shipping defaults (only the interface, the state/runtime dirs and the
embedded server's address are set) inside a fresh network namespace; trafgen in the other namespace
floods its veth with UDP from random sources at each rate. Per checkout it prints:

  idle      CPU of every floodwatch process over --idle seconds on a silent link, PSS and RSS sums
  per rate  the wire rate; cores and CPU-s per million wire packets of all processes during the flood;
            the per-actor split; the records the aggregator took (heartbeat counters through
            `floodwatch status`) and CPU per sampled record of capture and aggregator; detection
            latency = the first flood packet on the receiving veth -> the incident's created_at in the
            embedded server's database (same host, same clock)

CPU is utime+stime from /proc/<pid>/stat (a loaded machine slows wall time far more than CPU time).
`--ref COMMIT` first runs the same scenario on that commit (extracted with `git archive` into a temp
dir, run with the same venv), so the comparison comes from one run on one machine state.

    sudo .venv/bin/python benchmarks/flood_cost.py [--ref main] [--rates 100000,max] [--runs 2]
        [--seconds 8] [--idle 20] [--capture budget_pps=5000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.capture_live import rx_packets
from benchmarks.idle_footprint import cpu_of, mem_of, tree
from tests.capture.capture_support import eth_to, ipv4, trafgen_conf, udp
from tests.helpers import (
    PYTHON,
    REPO,
    NetnsPair,
    base_config,
    eventually,
    exit_on_sigterm,
    extract_commit,
    ipc_endpoints,
    netns_pair,
    stop_process,
    try_status,
    write_config,
)

# Prints the wall time at which the veth's rx counter first moves (the flood's first packet).
WATCH_RX = r"""
import sys, time
path = sys.argv[1]
def rx():
    with open(path) as f:
        return int(f.read())
base = rx(); print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    if rx() != base:
        print(time.time(), flush=True); break
    time.sleep(0.0005)
else:
    print("none", flush=True)
"""
ACTORS = ("capture", "aggregator", "detector", "recorder", "executor", "reporter", "apiserver")


@dataclass
class RateResult:
    rate: str
    wire_pps: list[float] = field(default_factory=list)
    cores: list[float] = field(default_factory=list)
    per_million: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    actor_cpu: dict[str, list[float]] = field(default_factory=dict)
    records: list[float] = field(default_factory=list)
    missed: int = 0  # floods that opened no incident within 30 s (trafgen below the detection floor)


def flood_frames(pair: NetnsPair, n: int = 1024) -> list[bytes]:
    rnd = random.Random(17)
    out = []
    for _ in range(n):
        src = f"{rnd.randint(11, 200)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        out.append(eth_to(pair.mac_b, pair.mac_a, ipv4(src, pair.ip4_b, 17,
                                                       udp(rnd.randint(1024, 65535), 80, b"F" * 32))))
    return out


class Agent:
    def __init__(self, tree_dir: Path, tmp: Path, pair: NetnsPair, port: int,
                 capture: dict[str, Any] | None = None) -> None:
        self.tree_dir, self.tmp, self.pair = tree_dir, tmp, pair
        cfg = base_config(tmp, ipc_endpoints(tmp / "run"), capture={"interfaces": [pair.if_b], **(capture or {})},
                          apiserver={"listen": f"127.0.0.1:{port}"},
                          reporter={"url": f"http://127.0.0.1:{port}/api/v1/agent"})
        del cfg["supervisor"], cfg["log"]  # the shipping defaults, not base_config's fast test ones
        self.config = write_config(tmp / "floodwatch.toml", cfg)
        self.db = tmp / "state" / "server.db"
        self.log = open(tmp / "agent.log", "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(tree_dir))
        self.proc = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, PYTHON, "-m", "floodwatch.cli", "run",
                                      "--config", str(self.config)], cwd=tree_dir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_running(self) -> None:
        eventually(lambda: (s := try_status(self.config)) and all(s.get(a, {}).get("state") == "running"
                                                                  for a in ACTORS), 90, interval=0.3,
                   message="every actor running")

    def names(self) -> dict[int, str]:
        st = try_status(self.config)
        return {self.proc.pid: "supervisor"} | {x["pid"]: n for n, x in st.items()}

    def counters(self, actor: str) -> dict[str, Any]:
        return dict(try_status(self.config).get(actor, {}).get("counters") or {})

    def incidents(self) -> list[tuple[float, str]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as c:
            return [(float(r[0]), str(r[1])) for r in c.execute("SELECT created_at, status FROM incidents")]

    def stop(self) -> None:
        stop_process(self.proc, 60)  # type: ignore[arg-type]
        self.log.close()


def cpu_split(agent: Agent, pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        try:
            out[p] = cpu_of(p)
        except OSError:
            out[p] = 0.0
    return out


def idle(agent: Agent, seconds: float) -> dict[str, Any]:
    pids = tree(agent.proc.pid)
    c0, t0 = cpu_split(agent, pids), time.monotonic()
    time.sleep(seconds)  # benchmark: the idle window
    c1, wall = cpu_split(agent, pids), time.monotonic() - t0
    mem = [mem_of(p) for p in pids if os.path.exists(f"/proc/{p}")]
    return {"cpu_pct": 100 * sum(c1[p] - c0[p] for p in pids) / wall, "pss": sum(m[1] for m in mem) / 1e6,
            "rss": sum(m[0] for m in mem) / 1e6, "procs": len(pids)}


def one_flood(agent: Agent, pair: NetnsPair, rate: str, seconds: float, max_packets: int,
              res: RateResult) -> None:
    pps = None if rate == "max" else int(float(rate))
    count = max_packets if pps is None else int(pps * seconds)
    conf = agent.tmp / "flood.cfg"
    conf.write_text(trafgen_conf(flood_frames(pair)))
    argv = ["trafgen", "--dev", pair.if_a, "--conf", str(conf), "-n", str(count), "--cpus", "1", "-q"]
    if pps is not None:
        argv += ["-t", f"{max(1, round(1e6 / pps))}us"]
    names = agent.names()
    pids = tree(agent.proc.pid)
    n_incidents = len(agent.incidents())
    rec0 = agent.counters("aggregator").get("records", 0)
    watch = pair.popen(pair.ns_b, [PYTHON, "-c", WATCH_RX, f"/sys/class/net/{pair.if_b}/statistics/rx_packets",
                                   "30"], stdout=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    watch.stdout.readline()
    rx0, c0, t0 = rx_packets(pair), cpu_split(agent, pids), time.monotonic()
    gen = pair.popen(pair.ns_a, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = watch.stdout.readline().strip()
    gen.wait(seconds * 10 + 120)
    secs = time.monotonic() - t0
    time.sleep(0.5)  # benchmark: the last batches and windows are processed and counted
    c1, rx1 = cpu_split(agent, pids), rx_packets(pair)
    watch.wait(5)
    wire = rx1 - rx0
    total = sum(c1[p] - c0[p] for p in pids)
    res.wire_pps.append(wire / secs)
    res.cores.append(total / (secs + 0.5))
    res.per_million.append(total / wire * 1e6)
    for p in pids:
        name = names.get(p, "zygote")
        res.actor_cpu.setdefault(name, []).append(c1[p] - c0[p])
    res.records.append(agent.counters("aggregator").get("records", 0) - rec0)
    try:
        new = eventually(lambda: (i := agent.incidents()) and len(i) > n_incidents and i, 30, interval=0.05,
                         message="the incident stored by the embedded server")
    except AssertionError:  # a flood under the floor (trafgen slowed by load): counted, the run goes on
        res.missed += 1
        print(f"{rate}: no incident within 30 s (wire {wire / secs:,.0f} pps)", file=sys.stderr)
        return
    if first != "none":
        res.latency.append(min(c for c, _ in new[n_incidents:]) - float(first))
    # the next flood must open a new incident: wait for this one to resolve, and for the cooldown
    eventually(lambda: all(s == "resolved" for _, s in agent.incidents()), 60, interval=0.3,
               message="the incident resolved")
    time.sleep(6.0)  # benchmark: the detector's default cooldown (5 s) after resolving


def run_tree(label: str, tree_dir: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[RateResult]]:
    results = [RateResult(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="fwflood") as d, netns_pair("fwflc") as pair:
        agent = Agent(tree_dir, Path(d), pair, 18900 + random.randrange(50), capture=dict(args.capture))
        try:
            agent.wait_running()
            time.sleep(args.warmup)  # benchmark: start-up work settles
            idle_res = idle(agent, args.idle)
            for _ in range(args.runs):
                for res in results:
                    one_flood(agent, pair, res.rate, args.seconds, args.max_packets, res)
                    print(f"{label} {res.rate}: wire {res.wire_pps[-1]:,.0f} pps, cores {res.cores[-1]:.3f}, "
                          f"latency {res.latency[-1] * 1000 if res.latency else -1:.0f} ms", file=sys.stderr)
        finally:
            agent.stop()
    return idle_res, results


def report(label: str, idle_res: dict[str, Any], results: list[RateResult]) -> None:
    med = statistics.median
    print(f"\n## {label}")
    print(f"idle: {idle_res['cpu_pct']:.2f} % of a core, {idle_res['procs']} processes, "
          f"PSS {idle_res['pss']:.0f} MB, RSS sum {idle_res['rss']:.0f} MB")
    print("| rate | wire pps | cores | CPU-s / M packets | detection to server (ms) | records | "
          "µs/record capture | µs/record aggregator | per actor CPU-s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        recs = med(r.records) or 1
        cap, agg = med(r.actor_cpu.get("capture", [0])), med(r.actor_cpu.get("aggregator", [0]))
        split = ", ".join(f"{n} {med(v):.2f}" for n, v in sorted(r.actor_cpu.items(), key=lambda kv: -med(kv[1]))
                          if med(v) >= 0.01)
        lat = (f"median {med(r.latency) * 1000:.0f}, max {max(r.latency) * 1000:.0f}" if r.latency else "-")
        lat += f" ({r.missed} of {len(r.cores)} floods opened none)" if r.missed else ""
        print(f"| {r.rate} | {med(r.wire_pps):,.0f} | {med(r.cores):.3f} | {med(r.per_million):.3f} | {lat} | "
              f"{recs:,.0f} | {cap / recs * 1e6:.1f} | {agg / recs * 1e6:.1f} | {split} |")


def capture_setting(kv: str) -> tuple[str, int | bool]:
    key, _, value = kv.partition("=")
    return key, value == "true" if value in ("true", "false") else int(value)


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="", help="a commit to run first as the baseline (git archive)")
    ap.add_argument("--rates", default="100000,max", help="packets/s, or max (trafgen without a gap)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-packets", type=int, default=1_000_000)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--capture", action="append", default=[], type=capture_setting,
                    help="KEY=VALUE: a [capture] setting away from the default (budget_pps=5000, paced_reads=false)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    trees: list[tuple[str, Path]] = []
    tmp_ref = None
    try:
        if args.ref:
            tmp_ref = extract_commit(args.ref, Path(tempfile.mkdtemp(prefix="fwref")))
            trees.append((f"ref {args.ref}", tmp_ref))
        trees.append(("this checkout", REPO))
        for label, path in trees:
            idle_res, results = run_tree(label, path, args)
            report(label, idle_res, results)
    finally:
        if tmp_ref is not None:
            shutil.rmtree(tmp_ref, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
