"""Packets per CPU-second through the aggregator's core, as the actor runs it (decode + Engine).

Scenarios (each about one million records, unsampled, at one million packets per second of stream
time, so every window is full):
  real-mix   the four shared attack captures, parsed by capture's parser, timestamps respaced
  syn-random a SYN flood from random IPv4 sources (worst case for the heavy-hitter tables)
  udp-100    a UDP flood from 100 sources
Also the fixed cost of a quiet live host: a CounterSample every 100 ms and one 20-record batch per
window, as CPU per second of stream time (ten windows and a second published).
Baseline in the same run: decoding the same messages and one numpy pass (np.frombuffer + bincount of
the protocol column), the floor for any vectorised aggregator. Medians of --runs runs.

    .venv/bin/python benchmarks/aggregator_throughput.py [--records 1000000] [--batch 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from floodwatch import messages
from floodwatch.aggregate.engine import Engine
from floodwatch.messages import PacketBatch
from floodwatch.records import RECORD_DTYPE
from floodwatch.settings.aggregator import AggregatorSettings

PCAPS = Path(__file__).resolve().parent.parent.parent / "shared" / "pcaps"


def real_mix(total: int) -> np.ndarray:
    from floodwatch.capture.fastparse import parse_many
    from floodwatch.capture.pcapfile import PcapReader

    parts = []
    for path in sorted(PCAPS.glob("*.pcap*")):
        with PcapReader(path) as reader:
            for chunk in reader.chunks(65536):
                parts.append(parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype))
    one = np.concatenate(parts)
    return np.resize(one, total)


def synthetic(total: int, sources: int | None, proto: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    r = np.zeros(total, dtype=RECORD_DTYPE)
    r["ipver"], r["proto"], r["flags"], r["ttl"] = 4, proto, 2 if proto == 6 else 0, 60
    r["wirelen"], r["sport"], r["dport"] = 60, rng.integers(1024, 65535, total), 80
    raw = np.zeros((total, 16), dtype=np.uint8)
    raw[:, 10:12] = 0xFF
    ints = rng.integers(0, 2**32, total) if sources is None else rng.integers(0, sources, total) + 0x0B000000
    raw[:, 12:] = ints.astype(">u4").view(np.uint8).reshape(-1, 4)
    r["src"] = raw.view("S16").reshape(-1)
    r["dst"] = np.frombuffer(bytes(10) + b"\xff\xff" + bytes([10, 10, 10, 10]), "S16")[0]
    return r


def encode_batches(recs: np.ndarray, size: int) -> list[bytes]:
    recs = recs.copy()
    recs["ts"] = 1000.0 + np.arange(recs.size) * 1e-6
    out = []
    for seq, i in enumerate(range(0, recs.size, size)):
        part = recs[i:i + size]
        out.append(messages.encode(PacketBatch("bench", "b", seq, 1, part.size, part.tobytes(),
                                               float(part["ts"][0]), float(part["ts"][-1]))))
    return out


def run_engine(encoded: list[bytes]) -> float:
    engine = Engine(AggregatorSettings())
    t = time.process_time()
    for data in encoded:
        engine.feed_batch(messages.decode(data))  # type: ignore[arg-type]
    engine.finish()
    return time.process_time() - t


def run_baseline(encoded: list[bytes]) -> float:
    t = time.process_time()
    acc = np.zeros(256, dtype=np.int64)
    for data in encoded:
        b = messages.decode(data)
        acc += np.bincount(np.frombuffer(b.records, dtype=RECORD_DTYPE)["proto"], minlength=256)  # type: ignore[attr-defined]
    return time.process_time() - t


def idle_cost(seconds: int = 100) -> float:
    """CPU seconds per stream second for a quiet host (counters + 20 records per window)."""
    engine = Engine(AggregatorSettings())
    base = np.zeros(20, dtype=RECORD_DTYPE)
    base["ipver"], base["proto"], base["wirelen"], base["dport"] = 4, 6, 60, 443
    base["src"] = np.frombuffer(bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]), "S16")[0]
    items = []
    for i in range(seconds * 10):
        ts = 1000.0 + i * 0.1
        items.append(messages.encode(messages.CounterSample("eth0", ts, i * 100, i * 6000, i * 90, i * 9000,
                                                            0, 0, 1, 10)))
        recs = base.copy()
        recs["ts"] = ts + 0.01
        items.append(messages.encode(PacketBatch("bench", "b", i, 1, 20, recs.tobytes(), ts, ts)))
    t = time.process_time()
    for data in items:
        msg = messages.decode(data)
        if isinstance(msg, PacketBatch):
            engine.feed_batch(msg)
        else:
            engine.feed_counters(msg)  # type: ignore[arg-type]
    return (time.process_time() - t) / seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    scenarios = {
        "real-mix": real_mix(args.records),
        "syn-random": synthetic(args.records, None, 6),
        "udp-100": synthetic(args.records, 100, 17),
    }
    print(f"records per scenario: {args.records}, batch: {args.batch}, runs: {args.runs} (medians)")
    for name, recs in scenarios.items():
        encoded = encode_batches(recs, args.batch)
        base = statistics.median(run_baseline(encoded) for _ in range(args.runs))
        full = statistics.median(run_engine(encoded) for _ in range(args.runs))
        print(f"{name:11s} aggregator {args.records / full / 1e6:5.2f} M pkts/CPU-s   "
              f"baseline (decode + 1 bincount) {args.records / base / 1e6:6.2f} M pkts/CPU-s")
    idle = statistics.median(idle_cost() for _ in range(args.runs))
    print(f"quiet host: {idle * 1000:.1f} ms CPU per second of traffic ({idle * 100:.2f} % of a core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
