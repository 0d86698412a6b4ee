"""The pcap/pcapng reader + parser against tshark on every shared capture, other link types, bad files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from floodwatch.capture import pcapwrite
from floodwatch.capture.pcapfile import PcapReader, read_frames
from floodwatch.errors import CaptureError
from tests.capture.capture_support import (
    assert_same_top,
    frames_of,
    profile_of_records,
    records_of,
    sll,
    sll2,
    tshark_profile,
    write_pcap,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
FILES = sorted(p.name for p in SHARED.glob("*.pcap*")) if SHARED.is_dir() else []
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def compare(path: Path) -> None:
    ref = tshark_profile(path)
    ours = profile_of_records(records_of(path))
    assert ours.packets == ref.packets
    assert ours.bytes == ref.bytes
    assert ours.protocols == ref.protocols
    assert len(ours.sources) == len(ref.sources)  # exact distinct sources
    assert ours.sources == ref.sources
    assert_same_top(ours.sources, ref.sources)


@pytest.mark.parametrize("name", FILES)
def test_shared_capture_matches_tshark(pcaps_dir: Path, name: str) -> None:
    compare(pcaps_dir / name)


def test_pcapng_and_nanosecond_pcap_match_tshark(pcaps_dir: Path, tmp_path: Path) -> None:
    src = pcaps_dir / "amp.dns.RRSIG.fragmented.pcap"
    for fmt, name in (("pcapng", "x.pcapng"), ("nsecpcap", "x.nsec.pcap")):
        out = tmp_path / name
        subprocess.run(["editcap", "-F", fmt, str(src), str(out)], check=True, capture_output=True)
        compare(out)
    with PcapReader(tmp_path / "x.pcapng") as r:
        assert r.format == "pcapng"
        first_ng = next(iter(r))[0]
    with PcapReader(src) as r:
        assert abs(next(iter(r))[0] - first_ng) < 1e-6


@pytest.mark.parametrize("kind", ["sll", "sll2", "raw"])
def test_cooked_and_raw_link_types_match_tshark(pcaps_dir: Path, tmp_path: Path, kind: str) -> None:
    frames = frames_of(pcaps_dir / "amp.TCP.reflection.SYNACK.pcap")
    if kind == "sll":
        path = write_pcap(tmp_path / "sll.pcap", 113, [(t, sll(f, i % 2 * 4)) for i, (t, f) in enumerate(frames)])
    elif kind == "sll2":
        path = write_pcap(tmp_path / "sll2.pcap", 276, [(t, sll2(f, i % 2 * 4)) for i, (t, f) in enumerate(frames)])
    else:  # raw IP: only the IP frames, without their Ethernet header
        ip = [(t, f[14:]) for t, f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
        path = write_pcap(tmp_path / "raw.pcap", 101, ip)
    compare(path)
    if kind != "raw":  # the cooked header's packet type gives the direction: every other one outgoing
        rows = records_of(path)
        assert list(rows["direction"][:4]) == [0, 1, 0, 1]


def test_truncated_file_gives_clear_error_after_the_good_packets(pcaps_dir: Path, tmp_path: Path) -> None:
    data = (pcaps_dir / "amp.TCP.reflection.SYNACK.pcap").read_bytes()
    for cut, what in ((len(data) - 7, "truncated packet"), (24 + 16 + 60 + 5, "truncated packet header"),
                      (10, "truncated file header")):
        bad = tmp_path / f"cut{cut}.pcap"
        bad.write_bytes(data[:cut])
        seen = 0
        with pytest.raises(CaptureError, match=what) as info, PcapReader(bad) as r:
            for _ in r:
                seen += 1
        assert str(bad) in str(info.value)
        if cut > 1000:
            assert seen == 7999


def test_corrupt_files_give_clear_errors(pcaps_dir: Path, tmp_path: Path) -> None:
    data = bytearray((pcaps_dir / "amp.TCP.reflection.SYNACK.pcap").read_bytes())
    data[24 + 8 : 24 + 12] = (10**7).to_bytes(4, "little")  # a captured length of 10 MB
    (tmp_path / "caplen.pcap").write_bytes(data)
    with pytest.raises(CaptureError, match="corrupt packet header"), PcapReader(tmp_path / "caplen.pcap") as r:
        list(r)
    (tmp_path / "junk.pcap").write_bytes(b"this is not a capture at all" * 10)
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        PcapReader(tmp_path / "junk.pcap")
    (tmp_path / "empty.pcap").write_bytes(b"")
    with pytest.raises(CaptureError, match="empty"):
        PcapReader(tmp_path / "empty.pcap")
    with pytest.raises(CaptureError, match="cannot open"):
        PcapReader(tmp_path / "missing.pcap")
    lt = bytearray(data[:24])
    lt[20:24] = (147).to_bytes(4, "little")  # a link type we do not read
    (tmp_path / "lt.pcap").write_bytes(bytes(lt))
    with pytest.raises(CaptureError, match="link type 147 is not supported"), PcapReader(tmp_path / "lt.pcap") as r:
        list(r)


def test_corrupt_pcapng_blocks(pcaps_dir: Path, tmp_path: Path) -> None:
    ng = tmp_path / "x.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcaps_dir / "amp.TCP.reflection.SYNACK.pcap"), str(ng)],
                   check=True, capture_output=True)
    data = ng.read_bytes()
    (tmp_path / "cut.pcapng").write_bytes(data[: len(data) - 30])
    seen = []
    with pytest.raises(CaptureError, match="truncated block"), PcapReader(tmp_path / "cut.pcapng") as r:
        for pkt in r:
            seen.append(pkt)
    assert len(seen) == 7999
    bad = bytearray(data)
    bad[4:8] = (13).to_bytes(4, "little")  # section header length not a multiple of 4
    (tmp_path / "len.pcapng").write_bytes(bytes(bad))
    with pytest.raises(CaptureError, match="corrupt block length"), PcapReader(tmp_path / "len.pcapng") as r:
        list(r)


def test_pcapng_with_two_link_types_matches_tshark(pcaps_dir: Path, tmp_path: Path) -> None:
    frames = frames_of(pcaps_dir / "amp.UDP.snmp.src161.pcapng")
    eth_file = write_pcap(tmp_path / "eth.pcap", 1, frames[:2000])
    sll_file = write_pcap(tmp_path / "sll.pcap", 113, [(t + 0.0000005, sll(f)) for t, f in frames[2000:]])
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), str(eth_file), str(sll_file)], check=True,
                   capture_output=True)
    compare(merged)
    with PcapReader(merged) as r:
        kinds = {c.linktype for c in r.chunks(512)}
    assert kinds == {1, 113}


def test_chunks_never_exceed_their_size(pcaps_dir: Path) -> None:
    with PcapReader(pcaps_dir / "amp.TCP.reflection.SYNACK.pcap") as r:
        sizes = [len(c) for c in r.chunks(100)]
    assert max(sizes) == 100 and sum(sizes) == 8000


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_the_writer_and_the_reader_agree_and_tshark_reads_the_files(tmp_path: Path, fmt: str) -> None:
    """One writer (pcapwrite), one reader (pcapfile): stamps to the microsecond, cut frames keep their
    wire length, and tshark reads the same packets."""
    frames = [(1_700_000_000.0 + i * 0.001001, bytes([i]) * (60 + i)) for i in range(50)]
    path = tmp_path / f"w.{fmt}"
    if fmt == "pcap":
        assert pcapwrite.write_pcap(path, frames, snaplen=80) == 50
    else:
        with open(path, "wb") as f:
            f.write(pcapwrite.pcapng_header(1, 80, "a test"))
            for ts, data in frames:
                f.write(pcapwrite.pcapng_record(ts, data[:80], len(data), "c" if ts == frames[3][0] else ""))
    with PcapReader(path) as r:
        got = [(ts, lt, bytes(r.buf[o : o + c]), w) for ts, lt, o, c, w in r]
    assert [g[2] for g in got] == [d[:80] for _, d in frames] == list(read_frames(path))
    assert [g[3] for g in got] == [len(d) for _, d in frames] and {g[1] for g in got} == {1}
    assert [round(g[0] * 1e6) for g in got] == [round(ts * 1e6) for ts, _ in frames]
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out == [str(v) for _, d in frames for v in (len(d), min(len(d), 80))]


def _chunked(path: Path, size: int) -> tuple[list[tuple[float, int, int, int, int]], str]:
    """Every packet as the chunks give it (runs of one length read by numpy), and the error if any."""
    rows: list[tuple[float, int, int, int, int]] = []
    try:
        with PcapReader(path) as r:
            for c in r.chunks(size):
                assert 0 < len(c) <= size
                rows += zip(c.ts.tolist(), [c.linktype] * len(c), c.offs.tolist(), c.caps.tolist(), c.wires.tolist(),
                            strict=True)
    except CaptureError as e:
        return rows, str(e)
    return rows, ""


def _one_by_one(path: Path) -> tuple[list[tuple[float, int, int, int, int]], str]:
    rows: list[tuple[float, int, int, int, int]] = []
    try:
        with PcapReader(path) as r:
            rows += r
    except CaptureError as e:
        return rows, str(e)
    return rows, ""


def _mixed_lengths(tmp_path: Path) -> list[Path]:
    """Runs of one frame length (long, short, a single frame), frames of every length, cut frames."""
    lengths = [80] * 3000 + [60] * 5 + [1514] + [64] * 9 + list(range(14, 300)) + [60] * 700 + [61, 62, 61, 62] * 50
    frames = [(1_700_000_000.0 + i * 1e-4, bytes([i % 251]) * n) for i, n in enumerate(lengths)]
    runs, cut = tmp_path / "runs.pcap", tmp_path / "snap.pcap"
    pcapwrite.write_pcap(runs, frames)
    pcapwrite.write_pcap(cut, frames, snaplen=96)  # captured lengths cut at 96 under longer wire lengths
    return [runs, cut]


def test_chunks_give_the_packets_the_one_by_one_reader_gives(pcaps_dir: Path, tmp_path: Path) -> None:
    """The chunked reader (runs of one captured length found by numpy, else one by one) yields exactly the
    per-packet reader's packets: shared captures, runs of every length, cut frames, chunk sizes that end
    inside runs, and damaged files (the same packets before the damage, the same error)."""
    paths = [p for p in sorted(pcaps_dir.glob("*.pcap")) if p.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1",)]
    paths += _mixed_lengths(tmp_path)
    data = (tmp_path / "runs.pcap").read_bytes()
    for name, damaged in (("cut_tail", data[:-7]), ("cut_header", data[: 24 + 3000 * 96 + 9]),
                          ("huge_caplen", data[: 24 + 2000 * 96 + 8] + (10**7).to_bytes(4, "little")
                           + data[24 + 2000 * 96 + 12 :]),
                          ("caplen_over_wire", data[: 24 + 2500 * 96 + 8] + (70000).to_bytes(4, "little")
                           + (80).to_bytes(4, "little") + data[24 + 2500 * 96 + 16 :])):
        (tmp_path / f"{name}.pcap").write_bytes(damaged)
        paths.append(tmp_path / f"{name}.pcap")
    for path in paths:
        want, want_err = _one_by_one(path)
        assert want
        for size in (1, 7, 100, 2048, 100_000):
            got, err = _chunked(path, size)
            if err and not want_err:
                pytest.fail(f"{path.name}: {err}")
            assert got == want or (err and got == want[: len(got)]), (path.name, size)
            assert bool(err) == bool(want_err), (path.name, size)
            if want_err and "corrupt" not in want_err:  # the same packets before the same damage
                assert (got, err.split(" (after")[0]) == (want, want_err.split(" (after")[0]), (path.name, size)
