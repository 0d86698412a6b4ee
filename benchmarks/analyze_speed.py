"""`floodwatch analyze` against `tshark -T fields` on the issue-17 capture, start-up included, same run.

The capture (built here with numpy, kept in /tmp, not in git): 1,000,000 packets over 100 s of mixed
traffic from a million random sources: IPv4 UDP 40 %, IPv4 TCP SYN 30 %, ICMP echo 10 %, IPv6 UDP 20 %,
every frame 80 bytes. Both tools read the whole file; the packet counts by protocol must agree (the
script fails otherwise), and the time is wall clock from start to exit, medians of --runs.
Python runs as an installed package does, from compiled bytecode: the session's PYTHONDONTWRITEBYTECODE
is dropped and the bytecode goes to a temporary PYTHONPYCACHEPREFIX (not into the trees), written by one
untimed run of each tree on a small capture first. The CPU seconds of each process of the analyze runs
(the command with its supervisor, the zygote, the actors) are printed as well.

    .venv/bin/python benchmarks/analyze_speed.py [--runs 3] [--packets 1000000] [--file F]
    .venv/bin/python benchmarks/analyze_speed.py --ref HEAD~3    # also the analyze of another commit
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import REPO, extract_commit

FRAME = 80
KINDS = (("udp4", 0.4), ("syn4", 0.3), ("icmp4", 0.1), ("udp6", 0.2))


def _frames(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 80-byte Ethernet frame per packet, by kind (0 udp4, 1 syn4, 2 icmp4, 3 udp6)."""
    n = len(kind)
    f = np.zeros((n, FRAME), np.uint8)
    f[:, 0:6] = (2, 0, 0, 0, 0, 1)
    f[:, 6:12] = (2, 0, 0, 0, 0, 2)
    v4 = kind < 3
    f[v4, 12:14] = (0x08, 0x00)
    f[~v4, 12:14] = (0x86, 0xDD)
    i4 = np.flatnonzero(v4)
    ip = f[i4]
    ip[:, 14] = 0x45
    tot = np.where(kind[i4] == 1, 40, FRAME - 14)  # a SYN is 40 bytes of IP, the rest is Ethernet padding
    ip[:, 16], ip[:, 17] = tot >> 8, tot & 0xFF
    ip[:, 22] = 64
    ip[:, 23] = np.choose(kind[i4], (17, 6, 1))
    ip[:, 26:30] = rng.integers(0, 256, (len(i4), 4), dtype=np.uint8)
    ip[:, 26] = rng.integers(1, 224, len(i4), dtype=np.uint8)
    ip[:, 30:34] = (198, 18, 0, 1)
    sport = rng.integers(1024, 65536, len(i4))
    ip[:, 34], ip[:, 35] = sport >> 8, sport & 0xFF
    udp = kind[i4] == 0
    ip[udp, 36:38] = (0, 53)
    ip[udp, 38], ip[udp, 39] = 0, tot[udp] - 20
    syn = kind[i4] == 1
    ip[syn, 36:38] = (0, 80)
    ip[syn, 46] = 0x50
    ip[syn, 47] = 0x02
    ip[syn, 48:50] = (0xFA, 0xF0)
    icmp = kind[i4] == 2
    ip[icmp, 34:36] = (8, 0)
    f[i4] = ip
    i6 = np.flatnonzero(~v4)
    v6 = f[i6]
    v6[:, 14] = 0x60
    v6[:, 18:20] = (0, FRAME - 54)
    v6[:, 20] = 17
    v6[:, 21] = 64
    v6[:, 22:24] = (0x20, 0x01)
    v6[:, 24:38] = rng.integers(0, 256, (len(i6), 14), dtype=np.uint8)
    v6[:, 38:54] = (0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)
    sport6 = rng.integers(1024, 65536, len(i6))
    v6[:, 54], v6[:, 55] = sport6 >> 8, sport6 & 0xFF
    v6[:, 56:58] = (0, 53)
    v6[:, 58:60] = (0, FRAME - 54)
    f[i6] = v6
    return f


def build_capture(path: Path, packets: int, seconds: float = 100.0, seed: int = 17) -> dict[str, int]:
    """Write the capture; returns the packets of each kind."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), packets, p=[p for _, p in KINDS]).astype(np.int64)
    ts = np.sort(rng.uniform(0, seconds, packets)) + 1.7e9
    rec = np.zeros(packets, np.dtype([("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
                                      ("data", np.uint8, FRAME)]))
    rec["sec"] = ts.astype(np.uint32)
    rec["usec"] = ((ts - np.floor(ts)) * 1e6).astype(np.uint32)
    rec["incl"] = rec["orig"] = FRAME
    for lo in range(0, packets, 200_000):
        rec["data"][lo:lo + 200_000] = _frames(kind[lo:lo + 200_000], rng)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").astype("<u4").tobytes()[:24])
        f.write(rec.tobytes())
    tmp.replace(path)
    counts = np.bincount(kind, minlength=len(KINDS))
    return {name: int(c) for (name, _), c in zip(KINDS, counts, strict=True)}


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
          cpu: dict[str, float] | None = None) -> tuple[float, str]:
    """Wall time and stdout of a command; with `cpu`, the CPU seconds of each of its processes by name
    (/proc/PID/comm: the actors are fw-capture, fw-aggregator...), read every 100 ms until it exits."""
    t0 = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env) as p:
        last: dict[int, tuple[str, float]] = {}
        while cpu is not None and p.poll() is None:
            last.update(_tree_cpu(p.pid))
            time.sleep(0.1)
        out, err = p.communicate()
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, argv, out, err)
    if cpu is not None:
        for name, secs in last.values():
            cpu[name] = cpu.get(name, 0.0) + secs
    return time.monotonic() - t0, out


def _tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """{pid: (name, CPU seconds)} of root and its descendants (followed through /proc's children lists:
    a few small reads, not a scan of every process, so the measuring takes little from the measured)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        name = "analyze" if pid == root else stat[stat.index("(") + 1 : stat.rindex(")")]
        out[pid] = (name, (int(rest[11]) + int(rest[12])) / tick)
    return out


def tshark_counts(out: str) -> dict[str, int]:
    """ip.proto / ipv6.nxt per line -> packets per protocol."""
    c: collections.Counter[str] = collections.Counter()
    for line in out.splitlines():
        proto4, nxt6 = [*line.split("\t"), "", ""][:2]
        c[{"17": "udp", "6": "tcp", "1": "icmp"}.get(proto4 or nxt6, "other")] += 1
    return dict(c)


def analyze_counts(out: str) -> dict[str, int]:
    summary = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    s = summary.get("summary", summary)
    protos = s.get("protocols") or s.get("protocol_packets") or {}
    return {"packets": int(s.get("packets", 0)), **{k: int(v) for k, v in protos.items()}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--file", default="/tmp/fw_analyze_issue17.pcap")
    ap.add_argument("--ref", default="", help="also time the analyze of this commit (git archive), same run")
    a = ap.parse_args()
    path = Path(a.file)
    if not path.exists():
        print("building", path, build_capture(path, a.packets))
    trees = {"this checkout": REPO}
    with tempfile.TemporaryDirectory() as d:
        if a.ref:
            trees = {f"ref {a.ref}": extract_commit(a.ref, Path(d)), **trees}
        env_py = sys.executable
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(d) / "pycache")  # compiled once, like an installed package
        small = Path(d) / "warm.pcap"
        build_capture(small, 2000)
        for tree in trees.values():
            timed([env_py, "-m", "floodwatch.cli", "analyze", str(small), "--json"], tree, env)
        tshark_argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "ip.proto", "-e", "ipv6.nxt"]
        times: dict[str, list[float]] = {name: [] for name in ["tshark", *trees]}
        counts: dict[str, dict[str, int]] = {}
        cpus: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(a.runs):
            dt, out = timed(tshark_argv, REPO)
            times["tshark"].append(dt)
            counts["tshark"] = tshark_counts(out)
            for name, tree in trees.items():
                split: dict[str, float] = {}
                dt, out = timed([env_py, "-m", "floodwatch.cli", "analyze", str(path), "--json"], tree, env, split)
                times[name].append(dt)
                cpus[name].append(split)
                counts[name] = analyze_counts(out)
    n = sum(counts["tshark"].values())
    load = os.getloadavg()
    print(f"file {path} ({n:,} packets), medians of {a.runs} runs, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    base = statistics.median(times["tshark"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<16} {med:6.2f} s  {n / med:>10,.0f} packets/s  {base / med:5.1f}x tshark   "
              f"counts {counts[name]}")
    print("CPU-s per process of each analyze (medians; from /proc, every 100 ms; analyze = the command and its "
          "supervisor)")
    for name, runs in cpus.items():
        procs = sorted({p for run in runs for p in run}, key=lambda p: -statistics.median(r.get(p, 0) for r in runs))
        parts = ", ".join(f"{p} {statistics.median(r.get(p, 0.0) for r in runs):.2f}" for p in procs)
        print(f"  {name:<16} total {statistics.median(sum(r.values()) for r in runs):5.2f}: {parts}")
    ok = all(counts[name].get(p, 0) == counts["tshark"].get(p, 0) for name in trees for p in ("udp", "tcp", "icmp"))
    print("counts agree" if ok else "COUNTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
