"""The capture actor as a real process replaying files: batches, totals against tshark, end of stream."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from floodwatch import messages
from floodwatch.messages import FrameBatch, PacketBatch, StreamEnded
from floodwatch.records import DIR_IN, DIR_UNKNOWN, RECORD_DTYPE
from tests.capture.capture_support import tshark_profile
from tests.helpers import BusHarness, base_config, start_actor, stop_process, write_config


class Sink:
    """The aggregator's and recorder's side: PULL sockets bound on the bulk endpoints."""

    def __init__(self, harness: BusHarness) -> None:
        self.packets = harness.ctx.socket(zmq.PULL)
        self.frames = harness.ctx.socket(zmq.PULL)
        for s, ep in ((self.packets, harness.endpoints.packets), (self.frames, harness.endpoints.frames)):
            s.setsockopt(zmq.LINGER, 0)
            s.bind(ep)

    def until_end(self, timeout: float = 60) -> tuple[list[PacketBatch], StreamEnded]:
        batches: list[PacketBatch] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.packets.poll(200):
                msg = messages.decode(self.packets.recv())
                if isinstance(msg, StreamEnded):
                    return batches, msg
                assert isinstance(msg, PacketBatch)
                batches.append(msg)
        raise AssertionError("no StreamEnded within the deadline")

    def frame_batches(self) -> list[Any]:
        out = []
        while self.frames.poll(300):
            out.append(messages.decode(self.frames.recv()))
        return out

    def close(self) -> None:
        self.packets.close(0)
        self.frames.close(0)


def run_file(harness: BusHarness, tmp_path: Path, file: Path, **capture: Any) -> tuple[list[PacketBatch],
                                                                                      StreamEnded, Sink, Any]:
    cfg = base_config(tmp_path, harness.endpoints,
                      capture={"source": "pcap", "pcap_file": str(file), **capture})
    path = write_config(tmp_path / "capture.toml", cfg)
    sink = Sink(harness)
    harness.ready.discard("capture")
    proc = start_actor("capture", path, tmp_path / "capture.log")
    try:
        harness.wait_ready("capture")
        batches, end = sink.until_end()
        return batches, end, sink, proc
    except BaseException:
        stop_process(proc)
        sink.close()
        raise


def rows_of(batches: list[PacketBatch]) -> np.ndarray:
    return np.concatenate([np.frombuffer(b.records, dtype=RECORD_DTYPE) for b in batches])


def test_file_replay_as_fast_as_possible_matches_tshark(harness: BusHarness, tmp_path: Path, pcaps_dir: Path) -> None:
    file = pcaps_dir / "amp.TCP.reflection.SYNACK.pcap"
    batches, end, sink, proc = run_file(harness, tmp_path, file, batch_records=1000,
                                        local_networks=["10.10.10.0/24"], frames_per_second=500)
    try:
        ref = tshark_profile(file)
        rows = rows_of(batches)
        assert end.packets == ref.packets == len(rows) and end.error == ""
        assert int(rows["wirelen"].sum()) == ref.bytes
        protos = Counter(np.where(rows["ipver"] > 0, rows["proto"], 0).tolist())
        assert protos == ref.protocols
        assert all(b.count <= 1000 and b.sample_rate == 1 and b.source == "pcap" for b in batches)
        assert [b.seq for b in batches] == list(range(len(batches)))
        assert end.ts == pytest.approx(float(rows["ts"][-1]))
        ip = rows[rows["ipver"] > 0]
        to_victim = ip["dst"] == b"\0" * 10 + b"\xff\xff" + bytes([10, 10, 10, 10])
        assert np.all(ip["direction"][to_victim] == DIR_IN)  # local network decides the direction
        assert np.all(ip["direction"][~to_victim] == DIR_UNKNOWN)
        frames = [m for m in sink.frame_batches() if isinstance(m, FrameBatch)]
        n_frames = sum(len(f.frames) for f in frames)
        # the frame budget runs on the file's clock: 500/s over a 0.15 s capture, plus the first bucket
        assert 0 < n_frames <= 500 + 0.2 * 500
        assert all(f.linktype == 1 and len(f.frames) <= 256 for f in frames)
        assert all(len(fr[2]) <= 256 for f in frames for fr in f.frames)
    finally:
        assert stop_process(proc) == 0
        sink.close()


def test_file_replay_at_n_times_recorded_speed(harness: BusHarness, tmp_path: Path, pcaps_dir: Path) -> None:
    file = pcaps_dir / "amp.dns.RRSIG.fragmented.pcap"  # 29.7 s of capture
    t0 = time.monotonic()
    batches, end, sink, proc = run_file(harness, tmp_path, file, speed=30.0)
    elapsed = time.monotonic() - t0
    try:
        assert end.packets == 4412 == sum(b.count for b in batches)
        assert elapsed >= 29.7 / 30 * 0.9  # paced by the file's clock, never faster
        assert len(batches) > 5  # sent as time passes, not in one go
    finally:
        stop_process(proc)
        sink.close()


def test_corrupt_file_ends_the_stream_with_a_clear_error(harness: BusHarness, tmp_path: Path,
                                                       pcaps_dir: Path) -> None:
    data = (pcaps_dir / "amp.TCP.reflection.SYNACK.pcap").read_bytes()
    bad = tmp_path / "cut.pcap"
    bad.write_bytes(data[: len(data) // 2])
    sub = harness.subscriber(StreamEnded)
    batches, end, sink, proc = run_file(harness, tmp_path, bad)
    try:
        assert "truncated" in end.error and str(bad) in end.error
        assert end.packets == sum(b.count for b in batches) > 0  # the good packets came first
        published = sub.get(StreamEnded, timeout=10)
        assert published.error == end.error
        assert proc.poll() is None  # the actor stays up (no restart would re-read the file)
    finally:
        sub.close()
        assert stop_process(proc) == 0
        sink.close()


def test_a_file_that_is_no_capture_ends_the_stream_at_once(harness: BusHarness, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture" * 100)
    batches, end, sink, proc = run_file(harness, tmp_path, junk)
    try:
        assert "not a pcap or pcapng file" in end.error and end.packets == 0 and not batches
    finally:
        stop_process(proc)
        sink.close()


def test_file_source_waits_at_the_hwm_and_loses_nothing(harness: BusHarness, tmp_path: Path, pcaps_dir: Path) -> None:
    """No aggregator at first: capture fills the tiny queue, waits (heartbeating), then delivers all."""
    from tests.helpers import eventually

    file = pcaps_dir / "amp.TCP.reflection.SYNACK.pcap"
    cfg = base_config(tmp_path, harness.endpoints, capture={"source": "pcap", "pcap_file": str(file),
                                                            "batch_records": 64})
    cfg["bus"]["hwm_packets"] = 2
    proc = start_actor("capture", write_config(tmp_path / "c.toml", cfg), tmp_path / "c.log")
    sink = None
    try:
        harness.wait_ready("capture")
        first = eventually(lambda: harness.heartbeats.get("capture"), 10)
        eventually(lambda: harness.heartbeats["capture"].ts > first.ts + 0.5, 10,
                   message="heartbeats go on while capture waits")
        assert harness.counters("capture").get("batches", 0) < 8000 // 64  # it is waiting, not dropping
        assert harness.counters("capture").get("batches_dropped", 0) == 0
        sink = Sink(harness)  # the aggregator arrives late
        batches, end = sink.until_end()
        assert end.packets == 8000 == sum(b.count for b in batches)
        assert [b.seq for b in batches] == list(range(len(batches)))
    finally:
        assert stop_process(proc) == 0
        if sink is not None:
            sink.close()


def test_stop_while_waiting_at_the_hwm_exits_cleanly(harness: BusHarness, tmp_path: Path, pcaps_dir: Path) -> None:
    from tests.helpers import eventually

    cfg = base_config(tmp_path, harness.endpoints, capture={
        "source": "pcap", "pcap_file": str(pcaps_dir / "pkt.TCP.synflood.spoofed.pcap"), "batch_records": 64})
    cfg["bus"]["hwm_packets"] = 1
    proc = start_actor("capture", write_config(tmp_path / "c.toml", cfg), tmp_path / "c.log")
    try:
        harness.wait_ready("capture")
        eventually(lambda: harness.heartbeats.get("capture"), 10)
    finally:
        assert stop_process(proc, timeout=10) == 0
