"""Capture files -> the capture area's parser -> the aggregator's engine -> TrafficWindows, in-process.

This is the same code the actors run (no bus): used to feed the detector's pure logic with windows
computed from real packets. `sampled_windows` hands the packets over as a live capture does above
`[capture] budget_pps` (exact counter readings, records kept 1 in N by the real controller): the
budget's tests and benchmarks/budget_accuracy.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.sigsample import SignatureSampler
from floodwatch.capture.sampling import SamplingController
from floodwatch.messages import CounterSample, Message, PacketBatch, TrafficWindow
from floodwatch.records import RECORD_DTYPE
from floodwatch.settings.aggregator import AggregatorSettings
from floodwatch.settings.capture import CaptureSettings
from floodwatch.signatures import SignatureMatcher

READING = 0.1  # seconds between counter readings while the kernel samples (busy_counter_interval)
CONTROLLER_EVERY = 2  # readings between sampling decisions (controller_interval 0.2 s)
SHARED_PCAPS = Path(__file__).resolve().parents[3] / "shared" / "pcaps"


def pcap_batches(path: Path, size: int = 1024, local_nets: list[str] | None = None) -> list[PacketBatch]:
    from floodwatch.capture.batch import Directions
    from floodwatch.capture.fastparse import parse_many
    from floodwatch.capture.pcapfile import PcapReader

    directions = Directions(local_nets or [])
    out = []
    with PcapReader(path) as reader:
        for seq, chunk in enumerate(reader.chunks(size)):
            rows = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            rows["ts"] = chunk.ts
            directions.apply(rows)
            out.append(PacketBatch(source="pcap", iface=path.name, seq=seq, sample_rate=1, count=len(rows),
                                   records=rows.tobytes(), t_first=float(chunk.ts[0]),
                                   t_last=float(chunk.ts[-1])))
    return out


def windows_of(path: Path, matcher: SignatureMatcher | None = None,
               local_nets: list[str] | None = None) -> list[TrafficWindow]:
    """Every TrafficWindow the aggregator makes of a capture file, in order."""
    engine = Engine(AggregatorSettings(), SignatureSampler(matcher or SignatureMatcher.default()))
    out: list[TrafficWindow] = []
    for b in pcap_batches(path, local_nets=local_nets):
        out += [m for m in engine.feed_batch(b) if isinstance(m, TrafficWindow)]
    out += [m for m in engine.finish() if isinstance(m, TrafficWindow)]
    return out


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every packet of the file as records (parsed as capture does) and its wire length."""
    from floodwatch.capture.batch import Directions
    from floodwatch.capture.fastparse import parse_many
    from floodwatch.capture.pcapfile import PcapReader

    rows, wires = [], []
    directions = Directions([])
    with PcapReader(path) as reader:
        for chunk in reader.chunks(4096):
            r = parse_many(reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype)
            r["ts"] = chunk.ts
            directions.apply(r)
            rows.append(r)
            wires.append(np.asarray(chunk.wires, dtype=np.int64))
    return np.concatenate(rows).view(RECORD_DTYPE), np.concatenate(wires)


def sampled_feed(rows: np.ndarray, wires: np.ndarray, budget: int | None, seed: int = 1,
                 fixed: int = 0) -> Iterator[PacketBatch | CounterSample]:
    """The batches and counter readings a live capture hands over for these packets above the budget:
    exact cumulative counters every READING, the records kept 1 in N at random (the kernel's filter),
    N from the real SamplingController on the file's clock (`fixed`: always 1 in `fixed`; `budget`
    None: every record)."""
    rng = np.random.default_rng(seed)
    t0 = float(rows["ts"][0])
    clock = [t0]
    ctl = SamplingController(budget or 1 << 30, CaptureSettings().max_sample_rate, lambda: clock[0], fixed)
    rate, cum_p, cum_b, seq = fixed or 1, 0, 0, 0
    ctl.update(0)
    yield CounterSample(iface="pcap", ts=t0 - 1e-6, rx_packets=0, rx_bytes=0, tx_packets=0, tx_bytes=0,
                        kernel_drops=0, send_drops=0, sample_rate=1, conn_count=-1)
    ticks = t0 + READING * np.arange(1, int((rows["ts"][-1] - t0) / READING) + 2)
    start = 0
    for k, end in enumerate(np.searchsorted(rows["ts"], ticks, side="right").tolist()):
        part = rows[start:end]
        keep = part if rate == 1 else part[rng.integers(0, rate, part.size) == 0]
        if keep.size:
            yield PacketBatch(source="afpacket", iface="pcap", seq=seq, sample_rate=rate, count=int(keep.size),
                              records=keep.tobytes(), t_first=float(keep["ts"][0]), t_last=float(keep["ts"][-1]))
            seq += 1
        cum_p += int(part.size)
        cum_b += int(wires[start:end].sum())
        start = end
        clock[0] = float(ticks[k])
        yield CounterSample(iface="pcap", ts=clock[0], rx_packets=cum_p, rx_bytes=cum_b, tx_packets=0,
                            tx_bytes=0, kernel_drops=0, send_drops=0, sample_rate=rate, conn_count=-1)
        if (k + 1) % CONTROLLER_EVERY == 0:
            rate = ctl.update(cum_p)


def sampled_windows(engine: Engine, rows: np.ndarray, wires: np.ndarray, budget: int | None, seed: int = 1,
                    fixed: int = 0, rates: list[int] | None = None) -> list[TrafficWindow]:
    """Every TrafficWindow `engine` makes of the packets handed over by `sampled_feed`; the batches'
    sample rates are appended to `rates`."""
    out: list[TrafficWindow] = []
    for item in sampled_feed(rows, wires, budget, seed, fixed):
        msgs: list[Message]
        if isinstance(item, PacketBatch):
            if rates is not None:
                rates.append(item.sample_rate)
            msgs = engine.feed_batch(item)
        else:
            msgs = engine.feed_counters(item)
        out += [m for m in msgs if isinstance(m, TrafficWindow)]
    return out + [m for m in engine.finish() if isinstance(m, TrafficWindow)]
