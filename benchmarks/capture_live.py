"""Live capture cost: trafgen floods a veth pair between two fresh namespaces; capture (and aggregator)
run in the receiving one. Measures CPU of the actors (from /proc/<pid>/stat), not wall time.

Scenarios, each run --runs times (medians reported):
  unsampled  budget far above the rate: every packet goes through Python -> records per CPU-second
  sampled    default budget at trafgen's top rate -> CPU-s per million wire packets, cores used,
             exact packet count from the kernel counters, kernel drops
  baseline   a plain Python AF_PACKET recv loop on the same flood (same run) -> packets per CPU-second
  trickle    (not by default) the sampled flood begins while 50 packets/s of background traffic run, so
             capture is in its lazy mode (ring read at each counter reading) -> kernel drops at the
             flood's start; --ring-blocks N tries another ring size for it

    sudo .venv/bin/python benchmarks/capture_live.py [--runs 3] [--packets 2000000] [--no-aggregator]
    sudo .venv/bin/python benchmarks/capture_live.py --scenarios trickle [--ring-blocks 32]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.capture.capture_support import eth_to, icmp, ipv4, tcp, trafgen_conf, udp
from tests.helpers import (
    BusHarness,
    NetnsPair,
    background_traffic,
    base_config,
    exit_on_sigterm,
    ipc_endpoints,
    netns_pair,
    start_actor,
    stop_process,
    write_config,
)

TICK = os.sysconf("SC_CLK_TCK")
BASELINE = r"""
import socket, sys, time, os
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 3)); s.settimeout(2.0)
buf = bytearray(2048); n = 0
print("ready", flush=True)
try:
    while True:
        s.recv_into(buf); n += 1
except socket.timeout:
    pass
t = os.times()
print(n, t.user + t.system, flush=True)
"""


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rx_packets(pair: NetnsPair) -> int:
    return int(pair.run(pair.ns_b, ["cat", f"/sys/class/net/{pair.if_b}/statistics/rx_packets"]).stdout)


def flood(pair: NetnsPair, tmp: Path, count: int) -> float:
    """Send `count` packets (UDP/TCP/ICMP mix) as fast as trafgen goes on one CPU; returns seconds."""
    a, b = pair.ip4_a, pair.ip4_b
    e = lambda p: eth_to(pair.mac_b, pair.mac_a, p)  # noqa: E731
    frames = [e(ipv4(a, b, 17, udp(5353, 53, b"Q" * 40)))] * 5 + [e(ipv4(a, b, 6, tcp(4000, 80, 2)))] * 3 + [
        e(ipv4(a, b, 1, icmp(8, 0, b"P" * 40)))] * 2
    conf = tmp / "flood.cfg"
    conf.write_text(trafgen_conf(frames))
    t0 = time.monotonic()
    pair.run(pair.ns_a, ["trafgen", "--dev", pair.if_a, "--conf", str(conf), "-n", str(count), "--cpus", "1", "-q"],
             timeout=600)
    return time.monotonic() - t0


def quiet(harness: BusHarness, key: str = "records", settle: float = 1.0, timeout: float = 60) -> dict[str, Any]:
    """Wait until the capture's heartbeat counter stops moving."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = harness.counters("capture")
        if c.get(key, 0) != last:
            last, since = c.get(key, 0), time.monotonic()
        elif time.monotonic() - since > settle:
            return c
        time.sleep(0.1)
    return harness.counters("capture")


def run_actors(pair: NetnsPair, tmp: Path, count: int, aggregator: bool, background_pps: float = 0.0,
               **capture: Any) -> dict[str, float]:
    busdir = Path(tempfile.mkdtemp(prefix="fwcapb"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    background = None
    try:
        with BusHarness(ipc_endpoints(busdir)) as harness:
            cfg = base_config(tmp, harness.endpoints, capture={"interfaces": [pair.if_b], **capture})
            cfg["supervisor"]["heartbeat_interval"] = 0.2
            path = write_config(tmp / "bench.toml", cfg)
            sink = None
            if aggregator:
                procs["aggregator"] = start_actor("aggregator", path, tmp / "aggregator.log", netns=pair.ns_b)
                harness.wait_ready("aggregator")
            else:
                import zmq

                sink = harness.ctx.socket(zmq.PULL)
                sink.setsockopt(zmq.LINGER, 0)
                sink.bind(harness.endpoints.packets)
            procs["capture"] = start_actor("capture", path, tmp / "capture.log", netns=pair.ns_b)
            harness.wait_ready("capture")
            if background_pps:
                background = background_traffic(pair, background_pps, 600)
            # benchmark: let capture settle (with background traffic: into its lazy mode), at a random
            # phase against its counter readings
            time.sleep(2.0 + random.random() / 10 if background_pps else 0.5)
            rx0 = rx_packets(pair)
            cpu0 = {n: cpu_of(p.pid) for n, p in procs.items()}
            secs = flood(pair, tmp, count)
            if background is not None:  # stopped with the flood, so the counters below settle
                stop_process(background)
                background = None
            if sink is not None:
                while sink.poll(200):
                    while sink.poll(0):
                        sink.recv()
            counters = quiet(harness)
            cpu = sum(cpu_of(p.pid) - cpu0[n] for n, p in procs.items())
            cap_cpu = cpu_of(procs["capture"].pid) - cpu0["capture"]
            wire = rx_packets(pair) - rx0
            if sink is not None:
                sink.close(0)
            return {"wire": wire, "sent": count, "seconds": secs, "cpu": cpu, "capture_cpu": cap_cpu,
                    "records": counters.get("records", 0), "drops": counters.get("kernel_drops", 0),
                    "rate": counters.get("sample_rate", 1), "batches_dropped": counters.get("batches_dropped", 0)}
    finally:
        if background is not None:
            stop_process(background)
        for p in procs.values():
            stop_process(p)
        shutil.rmtree(busdir, ignore_errors=True)


def run_baseline(pair: NetnsPair, tmp: Path, count: int) -> dict[str, float]:
    proc = pair.popen(pair.ns_b, [sys.executable, "-c", BASELINE, pair.if_b], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    flood(pair, tmp, count)
    n, cpu = proc.stdout.readline().split()
    proc.wait(10)
    return {"packets": int(n), "cpu": float(cpu)}


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--flood-packets", type=int, default=5_000_000)
    ap.add_argument("--no-aggregator", action="store_true")
    ap.add_argument("--scenarios", default="unsampled,sampled,baseline")
    ap.add_argument("--ring-blocks", type=int, default=0, help="ring blocks for the trickle scenario")
    args = ap.parse_args()
    agg = not args.no_aggregator
    todo = set(args.scenarios.split(","))
    res: dict[str, list[dict[str, float]]] = {k: [] for k in ("unsampled", "sampled", "baseline", "trickle")
                                              if k in todo}
    trickle_ring = {"ring_blocks": args.ring_blocks} if args.ring_blocks else {}
    with tempfile.TemporaryDirectory(prefix="fwcapbench") as d:
        tmp = Path(d)
        for i in range(args.runs):
            with netns_pair("fwcapb") as pair:
                if "baseline" in res:
                    res["baseline"].append(run_baseline(pair, tmp, args.packets))
                if "unsampled" in res:
                    res["unsampled"].append(run_actors(pair, tmp, args.packets, agg, sample_rate=1,
                                                       ring_blocks=64))
                if "sampled" in res:
                    res["sampled"].append(run_actors(pair, tmp, args.flood_packets, agg))
                if "trickle" in res:
                    res["trickle"].append(run_actors(pair, tmp, args.flood_packets, agg, background_pps=50,
                                                     **trickle_ring))
            print(f"run {i + 1}: " + "; ".join(f"{k}: {v[-1]}" for k, v in res.items()), file=sys.stderr)
    med = statistics.median
    who = "capture+aggregator" if agg else "capture"
    if "trickle" in res:
        t = res["trickle"]
        print(f"sampled flood over a 50 pps trickle, {who}, ring blocks {args.ring_blocks or 'default'}: "
              f"kernel drops per run {[int(r['drops']) for r in t]} of {args.flood_packets:,}; "
              f"{med(r['cpu'] / r['wire'] * 1e6 for r in t):.3f} CPU-s per million at "
              f"{med(r['wire'] / r['seconds'] for r in t):,.0f} pps; "
              f"wire counted/sent {med(r['wire'] / r['sent'] for r in t):.4f}")
    if not {"unsampled", "sampled", "baseline"} <= res.keys():
        return 0
    u, s, b = res["unsampled"], res["sampled"], res["baseline"]
    print(f"baseline python recv loop: {med(r['packets'] / r['cpu'] for r in b):,.0f} packets per CPU-s")
    print(f"unsampled, {who}: {med(r['records'] / r['cpu'] for r in u):,.0f} packets per CPU-s "
          f"(capture alone {med(r['records'] / r['capture_cpu'] for r in u):,.0f}); "
          f"wire {med(r['wire'] / r['seconds'] for r in u):,.0f} pps; "
          f"records/sent {med(r['records'] / r['sent'] for r in u):.3f}; "
          f"kernel drops {med(r['drops'] for r in u):,.0f}")
    print(f"sampled (default budget), {who}: {med(r['cpu'] / r['wire'] * 1e6 for r in s):.3f} CPU-s per million "
          f"wire packets at {med(r['wire'] / r['seconds'] for r in s):,.0f} pps; "
          f"cores {med(r['cpu'] / r['seconds'] for r in s):.2f}; "
          f"wire counted/sent {med(r['wire'] / r['sent'] for r in s):.4f}; "
          f"final rate 1/{med(r['rate'] for r in s):.0f}; kernel drops {med(r['drops'] for r in s):,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
