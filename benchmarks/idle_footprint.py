"""Idle footprint of the whole system: total CPU and memory of the supervisor and every actor.

The agent runs on its default actor set inside a fresh network namespace whose veth sees no traffic
(capture on that interface, the embedded API server on the namespace's loopback). After a warm-up, CPU
is measured from /proc/<pid>/stat over the window, memory as the sum of RSS and of PSS (PSS shares the
pages the Python processes have in common fairly; RSS counts them once per process), and as the distinct
physical pages the agent's processes map: the PSS they would sum to on a machine where no other process
maps the same files (on a busy one, other Python processes share libpython's and numpy's pages, and the
agent's PSS looks smaller than on a quiet one).

    .venv/bin/python benchmarks/idle_footprint.py --warmup 15 --seconds 30
    .venv/bin/python benchmarks/idle_footprint.py --warmup 15 --seconds 30 --background-pps 50
    .venv/bin/python benchmarks/idle_footprint.py --warmup 15 --seconds 30 --no-metrics   # without /metrics
    .venv/bin/python benchmarks/idle_footprint.py --ref main --seconds 120   # the baseline first, same run
    .venv/bin/python benchmarks/idle_footprint.py --seconds 60 --smaps   # and where each process's MB are
    .venv/bin/python benchmarks/idle_footprint.py --seconds 60 --wakeups # and each thread's wake-ups

`--wakeups`: each process's wake-ups per second over the window (voluntary context switches of its
threads, from /proc/PID/task/*/status), and its threads' own: unlike CPU %, the load of a shared machine
does not change how often an idle process wakes.

`--background-pps N`: a quiet but not silent host, N small UDP packets per second from the other
namespace for the whole run (a real host always sees some traffic: ARP, DNS, monitoring, ssh).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.capture_live import cpu_of
from benchmarks.smaps import distinct_pages
from benchmarks.smaps import table as smaps_table
from floodwatch.settings.core import SupervisorSettings
from tests.helpers import (
    PYTHON,
    REPO,
    background_traffic,
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


def mem_of(pid: int) -> tuple[int, int]:
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches of each thread of pid so far, by thread name (numbered if repeated)."""
    out: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in sorted(tids, key=int):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        name = fields.get("Name", "?").strip() + ("" if tid != str(pid) else "*")
        while name in out:
            name += "'"
        out[name] = int(fields.get("voluntary_ctxt_switches", "0"))
    return out


def tree(root: int) -> list[int]:
    """root and all its descendants (the supervisor, its zygote, the actors and anything they run)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(p for p, pp in parent.items() if pp == pid)
    return out


def measure(tree_dir: Path, a: argparse.Namespace) -> None:
    """One run of the agent from `tree_dir` (this checkout, or a --ref tree) and its table."""
    with tempfile.TemporaryDirectory() as d, netns_pair("fwidl") as pair:
        tmp = Path(d)
        port = 18787
        cfg = base_config(
            tmp, ipc_endpoints(tmp / "run"),
            # the shipping defaults for the supervisor (base_config's are the tests' fast ones)
            supervisor={"heartbeat_interval": SupervisorSettings.heartbeat_interval,
                        "heartbeat_timeout": SupervisorSettings.heartbeat_timeout},
            capture={"interfaces": [pair.if_b]},
            apiserver={"listen": f"127.0.0.1:{port}"},
            reporter={"url": f"http://127.0.0.1:{port}/api/v1/agent"},
            metrics={"enabled": not a.no_metrics},
        )
        config = write_config(tmp / "idle.toml", cfg)
        log = open(tmp / "sup.log", "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(tree_dir))
        sup = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, PYTHON, "-m", "floodwatch.cli", "run",
                                "--config", str(config)], cwd=tree_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        background = None
        if a.background_pps > 0:
            background = background_traffic(pair, a.background_pps, a.warmup + a.seconds + 90, "--variety", "64")
        try:
            eventually(lambda: (s := try_status(config)) and all(x["state"] == "running" for x in s.values()),
                       60, message="all actors running")
            time.sleep(a.warmup)  # benchmark: let start-up work settle before measuring
            report(sup.pid, config, a)
        finally:
            if background is not None:
                stop_process(background, 5)
            stop_process(sup, 30)
            log.close()


def report(root: int, config: Path, a: argparse.Namespace) -> None:
    pids = tree(root)
    c0 = {p: cpu_of(p) for p in pids}
    w0 = {p: wakeups(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(a.seconds)  # benchmark: the measurement window
    elapsed = time.monotonic() - t0
    cpu = {p: cpu_of(p) - c0[p] for p in pids}
    w1 = {p: wakeups(p) for p in pids}
    mem = {p: mem_of(p) for p in pids}
    names = {root: "supervisor"} | {x["pid"]: n for n, x in try_status(config).items()}
    names |= {p: "zygote" for p in pids if p not in names}
    load = os.getloadavg()
    print(f"idle footprint over {elapsed:.0f} s after {a.warmup:g} s warm-up, {len(pids)} processes, "
          f"{os.cpu_count()} cores, background {a.background_pps:g} pps, load average {load[0]:.1f} {load[1]:.1f}")
    for p in pids:
        print(f"  {names.get(p, p):<11} cpu {100 * cpu[p] / elapsed:5.2f}% of a core  "
              f"rss {mem[p][0] / 1e6:6.1f} MB  pss {mem[p][1] / 1e6:6.1f} MB")
    rss, pss = sum(m[0] for m in mem.values()), sum(m[1] for m in mem.values())
    print(f"TOTAL cpu {100 * sum(cpu.values()) / elapsed:.2f}% of one core, "
          f"rss {rss / 1e6:.1f} MB, pss {pss / 1e6:.1f} MB, distinct pages {distinct_pages(pids) / 1e6:.1f} MB",
          flush=True)
    if a.wakeups:
        print_wakeups(pids, names, w0, w1, elapsed)
    if a.smaps:
        for p in pids:
            print(smaps_table(p, str(names.get(p, p))), flush=True)


def print_wakeups(pids: list[int], names: dict[int, str], w0: dict[int, dict[str, int]],
                  w1: dict[int, dict[str, int]], elapsed: float) -> None:
    total = 0.0
    print("wake-ups per second (voluntary context switches; * the main thread)")
    for p in pids:
        per = {t: (n - w0[p].get(t, 0)) / elapsed for t, n in w1[p].items()}
        total += sum(per.values())
        threads = ", ".join(f"{t} {r:.1f}" for t, r in per.items() if r >= 0.05)
        print(f"  {names.get(p, p):<11} {sum(per.values()):6.1f}/s   {threads}")
    print(f"TOTAL wake-ups {total:.1f}/s", flush=True)


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=float, default=15)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--background-pps", type=float, default=0.0)
    ap.add_argument("--no-metrics", action="store_true", help="without the metrics actor (the baseline for its cost)")
    ap.add_argument("--smaps", action="store_true", help="then each process's memory by kind of mapping")
    ap.add_argument("--wakeups", action="store_true", help="then each process's and thread's wake-ups per second")
    ap.add_argument("--ref", default="", help="first run the same on this commit (git archive), the baseline")
    a = ap.parse_args()
    if not a.ref:
        measure(REPO, a)
        return 0
    with tempfile.TemporaryDirectory(prefix="fwref") as ref_dir:
        print(f"## ref {a.ref} (before)")
        measure(extract_commit(a.ref, Path(ref_dir)), a)
    print("## this checkout (after)")
    measure(REPO, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
