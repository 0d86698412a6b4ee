"""Pure logic of the recorder: the ring, the writer (checked with capinfos/tshark), retention, sessions."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from floodwatch.capture.pcapfile import read_frames
from floodwatch.config import config_from_dict
from floodwatch.errors import ConfigError
from floodwatch.recorder import retention
from floodwatch.recorder.retention import DAY, Policy, Stored
from floodwatch.recorder.ring import Frame, FrameRing, frames_of
from floodwatch.recorder.sessions import Sessions
from floodwatch.recorder.writer import CaptureWriter, Limits, file_name
from floodwatch.settings.recorder import RecorderSettings
from tests.recorder.recorder_packets import dns_amp_frame, quiet_frame

T0 = 1_700_000_000.0


def _frames(n: int, t: float = T0, make=quiet_frame) -> list[Frame]:  # type: ignore[no-untyped-def]
    return [Frame(t + i * 0.01, len(make(i)), make(i)) for i in range(n)]


def test_recorder_ring_is_bounded_by_count_and_bytes() -> None:
    ring = FrameRing(capacity=100, max_bytes=10_000)
    ring.extend(_frames(150), linktype=1)
    assert len(ring) == 100 and ring.snapshot()[0].ts == pytest.approx(T0 + 0.5)
    big = [Frame(T0 + 10 + i, 3000, b"x" * 3000) for i in range(5)]
    ring.extend(big, linktype=1)
    assert ring.nbytes <= 10_000 and [f.data for f in ring][-1] == b"x" * 3000
    ring.extend(_frames(3), linktype=101)  # another link type: the ring starts again
    assert len(ring) == 3 and ring.linktype == 101
    assert len(FrameRing(0, 0).snapshot()) == 0


def test_recorder_bad_frames_are_skipped_and_counted() -> None:
    good = [T0, 60, b"a" * 60]
    frames, bad = frames_of([good, [T0], "x", [float("nan"), 1, b"a"], [T0, 1, "text"], [True, 1, b"a"],
                             [1e300, 1, b"a"], [T0, 2**40, b"a"], [T0, -1, b"a"], [T0, 5, b"b" * 100]], snaplen=64)
    assert bad == 8 and len(frames) == 2
    assert len(frames[1].data) == 64 and frames[1].wirelen == 64  # cut to the snap length


def test_recorder_frames_checked_quickly_as_every_check_takes_them() -> None:
    """The capture's own [float, int, bytes] frames take a few exact type checks (issue 17: 20 batches a
    second in a flood); every entry, good or bad, comes out as the full checks make it, in order."""
    from floodwatch.recorder.ring import _checked

    edge = [[T0, 60, b"a" * 60], [T0, 5, b"b" * 100], [T0, 0, b"c"], [0.0, 1, b"d"], [-0.0, 1, b"d"], (T0, 9, b"e"),
            [int(T0), 9, b"f"], [T0, True, b"g"], [True, 1, b"h"], [float("inf"), 1, b"i"], [float("nan"), 1, b"j"],
            [-1.0, 1, b"k"], [2.0**32, 1, b"l"], [T0, 2**32, b"m"], [T0, 2**32 - 1, b"n"], [T0, -1, b"o"],
            [T0, 1, b""], [T0, 1, "text"], [T0, 1, bytearray(b"p")], [T0, 1.0, b"q"], [T0, 1], [T0, 1, b"r", 4],
            "x", None, 7, [T0, 60, memoryview(b"s")]]
    rnd = random.Random(5)
    items = [rnd.choice(edge) for _ in range(400)] + edge
    frames, bad = frames_of(items, snaplen=64)
    want = [f for f in (_checked(i, 64) for i in items) if f is not None]
    assert frames == want and [type(f.ts) for f in frames] == [float] * len(want)
    assert bad == len(items) - len(want) and 0 < len(want) < len(items)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_recorder_writer_files_open_in_tshark(tmp_path: Path, fmt: str) -> None:
    w = CaptureWriter(tmp_path, file_name("k-1", fmt), fmt, 1, 65535, Limits(max_packets=1000), 0o600,
                      sample_rate=1, comment="incident k-1")
    assert w.tmp.exists() and not w.final.exists()  # nothing visible under the final name yet
    w.write(_frames(20), 1, timed=False)
    w.write(_frames(30, T0 + 5, dns_amp_frame), sample_rate=8)
    cap = w.commit()
    assert not w.tmp.exists() and cap.packets == 50 and cap.sample_rate == 8 and not cap.truncated
    assert stat.S_IMODE(os.stat(cap.path).st_mode) == 0o600
    info = subprocess.run(["capinfos", "-M", "-c", "-E", "-T", "-r", cap.path], check=True, capture_output=True,
                          text=True).stdout.strip().split("\t")
    assert info[1:3] == ["ether", "50"]
    assert [len(f) for f in read_frames(cap.path)] == [len(quiet_frame(i)) for i in range(20)] + \
        [len(dns_amp_frame(i)) for i in range(30)]
    if fmt == "pcapng":
        comments = subprocess.run(["tshark", "-r", cap.path, "-T", "fields", "-e", "frame.comment"],
                                  check=True, capture_output=True, text=True).stdout.split("\n")
        assert comments[20] == "floodwatch: sampling 1 in 8 (one packet of every 8 was kept)"
        head = subprocess.run(["capinfos", cap.path], check=True, capture_output=True, text=True).stdout
        assert "sampling 1 in 1" in head and "incident k-1" in head


def test_recorder_writer_limits(tmp_path: Path) -> None:
    w = CaptureWriter(tmp_path, "a.pcap", "pcap", 1, 65535, Limits(max_packets=25, max_seconds=1e9))
    assert w.write(_frames(20), timed=False) == 20 and w.write(_frames(20)) == 5 and w.full
    assert w.write(_frames(20)) == 0 and w.commit().truncated
    w = CaptureWriter(tmp_path, "b.pcap", "pcap", 1, 65535, Limits(max_seconds=0.05))
    assert w.write(_frames(20)) == 6  # 0.00 .. 0.05 s after the first frame
    w.abort()
    assert not w.tmp.exists() and not w.final.exists()
    w = CaptureWriter(tmp_path, "c.pcap", "pcap", 1, 65535, Limits(max_bytes=1000))
    w.write(_frames(100))
    assert w.full and w.commit().bytes <= 1000


def test_recorder_file_names_never_leave_the_directory() -> None:
    assert file_name("5b3c-uuid", "pcapng") == "5b3c-uuid.pcapng"
    for key in ("../../etc/passwd", "/abs", ".hidden", "", "a/b", "x" * 200):
        name = file_name(key, "pcap")
        assert "/" not in name and not name.startswith(".") and name.startswith("incident-")


def _stored(name: str, age_days: float, size: int, now: float) -> Stored:
    return Stored(name, now - age_days * DAY, size, [f"/x/{name}.pcapng"])


def test_recorder_retention_plan_oldest_first() -> None:
    now = 1_800_000_000.0
    files = [_stored("new", 1, 100, now), _stored("old", 40, 100, now), _stored("mid", 10, 300, now),
             _stored("older", 20, 200, now)]
    names = lambda doomed: [s.name for s in doomed]  # noqa: E731
    assert names(retention.plan(files, now, Policy(30, 0, 0), None)) == ["old"]
    assert names(retention.plan(files, now, Policy(0, 450, 0), None)) == ["old", "older"]
    assert names(retention.plan(files, now, Policy(0, 0, 1000), free=500)) == ["old", "older", "mid"]
    assert names(retention.plan(files, now, Policy(0, 0, 1000), free=5000)) == []
    assert names(retention.plan(files, now, Policy(0, 100, 0), None, keep=frozenset({"new"}))) == \
        ["old", "older", "mid"]
    assert names(retention.plan(files, now, Policy(0, 0, 0), None)) == []


def test_recorder_retention_on_disk(tmp_path: Path) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        for suffix, size in ((".pcapng", 1000), (".findings.json", 100)):
            p = tmp_path / (name + suffix)
            p.write_bytes(b"x" * size)
            os.utime(p, (T0 + i, T0 + i))
    (tmp_path / "notes.txt").write_text("not ours")
    (tmp_path / ".d.pcap.part").write_bytes(b"half")
    stored = {s.name: s for s in retention.scan(tmp_path)}
    assert set(stored) == {"a", "b", "c"} and stored["a"].size == 1100
    doomed = retention.plan(stored.values(), T0 + 10, Policy(0, 2500, 0), retention.free_bytes(tmp_path))
    assert retention.remove(doomed)[:2] == (2, 1100)
    assert sorted(os.listdir(tmp_path)) == [".d.pcap.part", "b.findings.json", "b.pcapng", "c.findings.json",
                                            "c.pcapng", "notes.txt"]
    assert retention.remove_stale_parts(tmp_path) == 1 and not (tmp_path / ".d.pcap.part").exists()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _sessions(tmp_path: Path, **kw: object) -> tuple[Sessions, Clock]:
    s = replace(RecorderSettings(), output_dir=str(tmp_path), min_free_bytes=0, ring_packets=10, close_delay=1.0,
                **kw)  # type: ignore[arg-type]
    clock = Clock()
    return Sessions(s, tmp_path, clock), clock


def _batch(n: int, t: float) -> list[list[object]]:
    return [[t + i * 0.001, len(dns_amp_frame(i)), dns_amp_frame(i)] for i in range(n)]


def test_recorder_sessions_survive_hostile_batches(tmp_path: Path) -> None:
    sess, _ = _sessions(tmp_path)
    sess.on_opened("k", "")
    assert sess.on_frames(_batch(5, T0), 70000, 1) == [] and sess.counters["bad_frames"] == 5
    sess.on_frames(_batch(5, T0), 1, -3)
    sess.on_frames([[T0, 10**12, b"x"], [T0 + 1, 60, b"y" * 60]], 1, 2**40)
    [saved] = sess.on_stream_ended()
    assert saved.capture.packets == 6 and saved.capture.sample_rate == 2**31


def test_recorder_sessions_close_after_resolution_and_delay(tmp_path: Path) -> None:
    sess, clock = _sessions(tmp_path)
    sess.on_frames(_batch(20, T0), 1, 1)
    sess.on_opened("k", "dns_amplification")
    sess.on_frames(_batch(5, T0 + 1), 1, 1)
    sess.on_resolved("k", "dns_amplification", ended_at=T0 + 50)
    assert sess.tick() == []
    clock.t += 0.5
    sess.on_frames(_batch(5, T0 + 2), 1, 1)  # frames still in flight push the close back
    clock.t += 0.8
    assert sess.tick() == []
    clock.t += 0.3
    [saved] = sess.tick()
    assert saved.capture.packets == 20 and saved.key == "k"  # ring 10 + 5 + 5
    sess.on_opened("k", "x")  # a duplicate open of a finished incident records nothing
    assert not sess.active


def test_recorder_sessions_stop_at_incident_end_and_bound_open_files(tmp_path: Path) -> None:
    sess, _ = _sessions(tmp_path, max_open=1)
    sess.on_opened("a", "")
    sess.on_opened("b", "")
    assert sess.counters["skipped_busy"] == 1 and list(sess.active) == ["a"]
    sess.on_frames(_batch(10, T0), 1, 1)
    sess.on_resolved("a", "", ended_at=T0 + 0.0045)
    [saved] = sess.on_frames(_batch(10, T0 + 0.005), 1, 1)  # a frame after the end: caught up, close
    assert saved.capture.packets == 10
    sess.on_opened("c", "")  # starts with the ring's 10 frames
    [saved] = sess.on_stream_ended()
    assert saved.key == "c" and saved.capture.packets == 10 and sess.counters["saved"] == 2
    sess.ring.clear()
    sess.on_opened("d", "")
    assert sess.on_stream_ended() == [] and sess.counters["empty_recordings"] == 1


def test_recorder_settings_are_validated(tmp_path: Path) -> None:
    assert config_from_dict({"recorder": {"output_dir": str(tmp_path), "format": "pcap"}}).recorder.format == "pcap"
    for bad in ({"format": "erf"}, {"file_mode": 0o666}, {"max_packets": 0}, {"snaplen": 10},
                {"max_total_bytes": 1000}, {"subtype_min_share": 2.0}):
        with pytest.raises(ConfigError):
            config_from_dict({"recorder": bad})
