"""Flow records and sFlow samples per CPU-second through the collector's core (decode -> weighted records
-> PacketBatch messages encoded for the bus), as the actor runs it.

Streams (built once, to the RFCs, by floodwatch.collector.exportgen): NetFlow v9 and IPFIX datagrams of
30 IPv4 flow records each (a template every 20 datagrams, as exporters refresh them), NetFlow v5 (30
records), and sFlow v5 datagrams of 7 flow samples with 128-byte Ethernet/IPv4/UDP headers (1 in 1000).
Flows come from random sources to a /24 of protected addresses. CPU time is the process's (user+system),
medians of --runs runs. Optional baseline in the same run: FastNetMon CE (--fastnetmon), see BENCHMARKS.md.

    .venv/bin/python benchmarks/collector_decode.py [--datagrams 20000] [--runs 5] [--kinds v9,sflow] [--fastnetmon]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collections.abc import Callable

from floodwatch import messages
from floodwatch.collector import exportgen as G
from floodwatch.collector.core import Collector
from floodwatch.messages import Message
from floodwatch.settings.collector import CollectorSettings

RECORDS = 30
SAMPLES = 7


def flows(rng: random.Random, n: int) -> list[G.Flow]:
    return [(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
             f"203.0.113.{rng.randrange(256)}", rng.randrange(1024, 65536), rng.choice([53, 123, 80, 443]),
             rng.choice([6, 17]), 2, rng.randrange(1, 20), 0) for _ in range(n)]


def with_octets(fl: list[G.Flow]) -> list[G.Flow]:
    return [(s, d, sp, dp, pr, f, p, p * 400) for s, d, sp, dp, pr, f, p, _ in fl]


def stream(kind: str, count: int) -> list[bytes]:
    rng = random.Random(16)
    out = []
    for i in range(count):
        fl = with_octets(flows(rng, RECORDS))
        if kind == "v5":
            out.append(G.netflow_v5(fl, sampling=100, seq=i))
        elif kind in ("v9", "ipfix"):
            ipfix = kind == "ipfix"
            sets = [G.template_set(300, G.V4_FIELDS, ipfix)] if i % 20 == 0 else []
            sets.append(G.data_set(300, G.v4_records(fl)))
            out.append(G.ipfix(sets, seq=i) if ipfix else G.netflow_v9(sets, seq=i))
        else:
            heads = [(G.eth_ipv4_udp(s, d, sp, dp, 86), 1200) for s, d, sp, dp, *_ in fl[:SAMPLES]]
            out.append(G.sflow_v5(heads, rate=1000, seq=i * SAMPLES))
    return out


def run(kind: str, data: list[bytes]) -> tuple[float, int]:
    sent = [0]

    def sink(msg: Message, channel: str) -> bool:
        messages.encode(msg)
        sent[0] += 1
        return True

    settings = CollectorSettings(networks=["203.0.113.0/24"], frames_per_second=0)
    c = Collector(settings, sink, time.monotonic)
    proto = "sflow" if kind == "sflow" else "flow"
    t0 = time.process_time()
    now = time.time()
    for d in data:
        c.feed(proto, d, "192.0.2.1", now)
    c.flush_all()
    cpu = time.process_time() - t0
    units = c.counters["samples"] if kind == "sflow" else c.counters["flows"]
    assert c.counters["malformed"] == 0 and sent[0] > 0
    return cpu, units


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datagrams", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kinds", default="v9,ipfix,v5,sflow", help="streams to run, comma separated")
    ap.add_argument("--fastnetmon", action="store_true", help="FastNetMon CE on the same streams, same run")
    args = ap.parse_args()
    fnm = None
    if args.fastnetmon:
        if not shutil.which("fastnetmon"):
            sys.exit("fastnetmon not installed (apt-get install fastnetmon)")
        from benchmarks.fastnetmon_ce import FastNetMon
        fnm = FastNetMon("203.0.113.0/24")
    try:
        for kind in args.kinds.split(","):
            n = args.datagrams if kind != "sflow" else args.datagrams * RECORDS // SAMPLES
            data = stream(kind, n)
            unit = "samples" if kind == "sflow" else "records"
            rates, units = median_rate(lambda d=data, k=kind: run(k, d), args.runs)  # type: ignore[misc]
            line = (f"{kind:6s} {rates / 1e6:6.2f} M {unit}/CPU-s  (median of {args.runs}, {units} {unit} "
                    f"in {len(data)} datagrams)")
            if fnm is not None:
                proto = "sflow" if kind == "sflow" else "flow"
                theirs, their_units = median_rate(lambda d=data, p=proto: fnm.run(p, d), args.runs)  # type: ignore[misc]
                line += f"; fastnetmon {theirs / 1e6:6.2f} M/CPU-s ({their_units} decoded)"
            print(line, flush=True)
    finally:
        if fnm is not None:
            fnm.close()


def median_rate(once: Callable[[], tuple[float, int]], runs: int) -> tuple[float, int]:
    rates, units = [], 0
    for _ in range(runs):
        cpu, units = once()
        rates.append(units / cpu)
    return statistics.median(rates), units


if __name__ == "__main__":
    main()
