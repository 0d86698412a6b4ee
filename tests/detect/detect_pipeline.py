"""Capture files -> the capture area's parser -> the aggregator's engine -> TrafficWindows, in-process.

This is the same code the actors run (no bus): used to feed the detector's pure logic with windows
computed from real packets.
"""

from __future__ import annotations

from pathlib import Path

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.sigsample import SignatureSampler
from floodwatch.messages import PacketBatch, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from floodwatch.signatures import SignatureMatcher

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
