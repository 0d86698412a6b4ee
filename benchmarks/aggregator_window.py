"""CPU of the aggregator's engine per 100 ms window, as the actor runs it (issue 17), against --ref.

Three streams, each fed to `Engine` with the shipping defaults (iptocc countries, the built-in signature
matcher) and every message it publishes encoded for the bus as the actor does (`quiet_runs`):
  flood    a sampled UDP flood as the live capture hands it over: 2,000 records per window (budget_pps
           20,000, the default before issue 17's budget work) sampled 1 in 16, from 1,024 random sources
           to one address, read twice per window (paced reads), a counter reading every 100 ms; 20 s
  analyze  the first --packets packets of the issue-17 capture (benchmarks/analyze_speed.py builds it:
           a million random sources, about 1,000 packets per window) in the file source's 2,048-record
           batches
  silent   a link with no traffic: 600 s of counter readings, one a second (the capture's quiet mode),
           each closing ten windows no record reached
CPU is the process time of the feeding loop only (inputs built before), the minimum of --runs; with
--ref the same runs on that commit (git archive) alternate with this checkout's, in one process each.

    .venv/bin/python benchmarks/aggregator_window.py [--ref main] [--runs 5] [--packets 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CAPTURE = Path("/tmp/fw_analyze_issue17.pcap")


def flood_items(seconds: int = 20, per_window: int = 2000, rate: int = 16, sources: int = 1024) -> list:
    from floodwatch.messages import CounterSample, PacketBatch
    from floodwatch.records import RECORD_DTYPE

    rng = np.random.default_rng(5)
    n = seconds * 10 * per_window
    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["ipver"], r["proto"], r["ttl"], r["wirelen"], r["paylen"], r["dport"] = 4, 17, 64, 60, 18, 9
    r["sport"] = rng.integers(1024, 65535, n)
    raw = np.zeros((n, 16), dtype=np.uint8)
    raw[:, 10:12] = 0xFF
    ints = rng.integers(0, 2**32, sources)[rng.integers(0, sources, n)]
    raw[:, 12:] = ints.astype(">u4").view(np.uint8).reshape(-1, 4)
    r["src"] = raw.view("S16").reshape(-1)
    r["dst"] = np.frombuffer(bytes(10) + b"\xff\xff" + bytes([10, 10, 10, 10]), "S16")[0]
    r["ts"] = 1000.0 + np.sort(rng.uniform(0, seconds, n))
    items: list = []
    for k in range(seconds * 20):  # a read every 50 ms, a counter reading every 100 ms
        t0, t1 = 1000 + k * 0.05, 1000 + (k + 1) * 0.05
        lo, hi = np.searchsorted(r["ts"], [t0, t1])
        part = r[lo:hi]
        items.append(PacketBatch("bench", "eth0", k, rate, part.size, part.tobytes(), float(part["ts"][0]),
                                 float(part["ts"][-1])))
        if k % 2:
            i = (k + 1) // 2
            items.append(CounterSample("eth0", t1, i * per_window * rate, i * per_window * rate * 60, 0, 0, 0, 0,
                                       1, 10))
    return items


def silent_items(seconds: int = 600) -> list:
    from floodwatch.messages import CounterSample

    return [CounterSample("eth0", 1000.055 + k, 5000, 300_000, 0, 0, 0, 0, 1, 3) for k in range(seconds)]


def analyze_items(packets: int) -> list:
    from floodwatch.capture.fastparse import parse_many
    from floodwatch.capture.pcapfile import PcapReader
    from floodwatch.messages import PacketBatch

    items: list = []
    with PcapReader(CAPTURE) as reader:
        for seq, chunk in enumerate(reader.chunks(2048)):
            rows = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            rows["ts"] = chunk.ts
            items.append(PacketBatch("bench", "pcap", seq, 1, rows.size, rows.tobytes(), float(chunk.ts[0]),
                                     float(chunk.ts[-1])))
            if (seq + 1) * 2048 >= packets:
                break
    return items


def feed(items: list) -> tuple[float, int]:
    from actors.aggregator import quiet_runs
    from floodwatch import messages
    from floodwatch.aggregate.engine import Engine
    from floodwatch.aggregate.geo import make_lookup
    from floodwatch.aggregate.sigsample import SignatureSampler, load_matcher
    from floodwatch.messages import PacketBatch, TrafficWindow
    from floodwatch.settings.aggregator import AggregatorSettings

    engine = Engine(AggregatorSettings(), SignatureSampler(load_matcher()), make_lookup("iptocc"))
    windows = 0
    t = time.process_time()
    for m in items:
        out = engine.feed_batch(m) if isinstance(m, PacketBatch) else engine.feed_counters(m)
        out += [] if m is not items[-1] else engine.finish()
        windows += sum(isinstance(o, TrafficWindow) for o in out)
        for o in quiet_runs(out):  # as the actor publishes them (a silent second's windows as one message)
            messages.encode(o)
    return time.process_time() - t, windows


def child(which: str, packets: int, runs: int) -> None:
    """In the tree under test (cwd): print {"cpu": [...], "windows": n} as JSON."""
    items = {"flood": flood_items, "silent": silent_items}.get(which, lambda: analyze_items(packets))()
    got = [feed(items) for _ in range(runs)]
    import floodwatch

    print(json.dumps({"cpu": [c for c, _ in got], "windows": got[0][1], "tree": floodwatch.__file__}))


def run_in(tree: Path, which: str, packets: int, runs: int) -> dict:
    # this module first (it puts its own checkout on sys.path), then the tree under test before it
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import aggregator_window as a; "
            f"sys.path.insert(0, '.'); a.child({which!r}, {packets}, {runs})")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="", help="also run this commit (git archive), alternating, same run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets of the issue-17 capture fed")
    a = ap.parse_args()
    if not CAPTURE.exists():
        from benchmarks.analyze_speed import build_capture
        build_capture(CAPTURE, 1_000_000)
    from tests.helpers import REPO, extract_commit

    with tempfile.TemporaryDirectory() as d:
        trees = {"this checkout": REPO}
        if a.ref:
            trees = {f"ref {a.ref}": extract_commit(a.ref, Path(d)), **trees}
        load = os.getloadavg()
        print(f"engine CPU per window, min of {a.runs} runs, {os.cpu_count()} cores, load average {load[0]:.1f}")
        for which in ("flood", "analyze", "silent"):
            got: dict[str, list[float]] = {name: [] for name in trees}
            windows = 0
            for _ in range(2):  # the trees alternate, in two rounds
                for name, tree in trees.items():
                    r = run_in(tree, which, a.packets, max(1, a.runs // 2 + a.runs % 2))
                    got[name] += r["cpu"]
                    windows = r["windows"]
                    assert r["tree"].startswith(str(tree)), f"{name} ran {r['tree']}"
            for name, cpu in got.items():
                best = min(cpu)
                n = {"analyze": a.packets, "flood": windows * 2000}.get(which, 0)
                per_record = f"  {best / n * 1e6:5.2f} µs per record" if n else ""
                print(f"  {which:8s} {name:16s} {best:6.2f} CPU-s  {windows:5d} windows  "
                      f"{best / windows * 1e3:5.2f} ms per window{per_record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
