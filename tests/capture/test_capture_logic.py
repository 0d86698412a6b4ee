"""Pure logic of capture: sampling controller, batching, directions, frame budget, counters, settings."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from floodwatch.capture import bpf
from floodwatch.capture.batch import Directions, FrameBudget
from floodwatch.capture.conns import ConnCounter, _tcp_inuse
from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.ifstats import IfCounters, IfStats, default_route_interface
from floodwatch.capture.output import NOTHING_DUE_MS, Output
from floodwatch.capture.sampling import SamplingController
from floodwatch.capture.sources import frame_rows
from floodwatch.config import config_from_dict
from floodwatch.errors import CaptureError, ConfigError
from floodwatch.messages import FrameBatch, Message, PacketBatch
from floodwatch.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, RECORD_DTYPE, addr_bytes
from tests.capture.capture_support import eth, ipv4, ipv6, udp
from tests.helpers import eventually


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sampling_rises_at_once_and_falls_slowly() -> None:
    clock = Clock()
    c = SamplingController(budget_pps=10_000, max_rate=1024, clock=clock, hold=2.0)
    total = 0

    def tick(pps: int, dt: float = 0.1, drops: int = 0) -> int:
        nonlocal total
        clock.t += dt
        total += int(pps * dt)
        return c.update(total, drops)

    assert c.update(0) == 1
    assert tick(5_000) == 1  # under 80 % of the budget
    assert tick(500_000) == 64  # 500k / (0.8 * 10k) = 62.5 -> 64, at once
    assert tick(500_000) == 64
    for _ in range(10):  # the flood ends: stays for `hold` seconds, then comes down in steps
        rate = tick(1_000)
    assert rate == 64
    for _ in range(30):
        rate = tick(1_000)
    assert rate < 64
    for _ in range(200):
        rate = tick(1_000)
    assert rate == 1
    assert tick(20_000, drops=5) >= 2  # ring drops: Python is too slow at this rate
    assert c.changes >= 3


def test_sampling_caps_and_fixed_rate_and_counter_reset() -> None:
    clock = Clock()
    c = SamplingController(1000, max_rate=16, clock=clock)
    c.update(0)
    clock.t += 1
    assert c.update(10_000_000) == 16
    clock.t += 1
    assert c.update(5) == 16  # counters went backwards (interface re-created): no decision
    fixed = SamplingController(1000, max_rate=64, clock=clock, fixed_rate=8)
    assert fixed.update(0) == 8
    clock.t += 1
    assert fixed.update(10**9) == 8


def test_bpf_program_shapes() -> None:
    assert bpf.sampling_program(1, 256) == [(bpf.BPF_RET_K, 0, 0, 256)]
    prog = bpf.sampling_program(64, 128)
    assert prog[0][3] == (bpf.SKF_AD_OFF + bpf.SKF_AD_RANDOM) & 0xFFFFFFFF
    assert prog[1] == (bpf.BPF_ALU_MOD_K, 0, 0, 64)
    assert prog[-2][3] == 128 and prog[-1][3] == 0
    with pytest.raises(ValueError):
        bpf.sampling_program(0, 128)


def rows_for(frames: list[bytes], ts0: float = 100.0) -> np.ndarray:
    buf = b"".join(frames)
    caps = np.array([len(f) for f in frames], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
    rows = parse_many(buf, offs, caps, caps.copy(), 1)
    rows["ts"] = ts0 + np.arange(len(frames)) * 0.001
    return rows.copy()


def test_directions_from_local_networks() -> None:
    d = Directions(["10.0.0.0/8", "2001:db8::/32"])
    rows = rows_for([eth(ipv4("1.2.3.4", "10.1.1.1", 17, udp(1, 2))), eth(ipv4("10.9.9.9", "8.8.8.8", 17, udp(1, 2))),
                     eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1, 2))),
                     eth(ipv6("2001:db8::5", "2a00::1", 17, udp(1, 2)), 0x86DD),
                     eth(ipv4("11.0.0.1", "9.0.0.1", 17, udp(1, 2)))])
    d.apply(rows)
    assert rows["direction"].tolist() == [DIR_IN, DIR_OUT, DIR_UNKNOWN, DIR_OUT, DIR_UNKNOWN]
    assert not Directions([])


def test_output_batches_by_size_age_and_rate_change() -> None:
    clock = Clock()
    sent: list[tuple[Message, str]] = []
    ok = {"packets": True, "frames": True}

    def send(msg: Message, channel: str) -> bool:
        sent.append((msg, channel))
        return ok[channel]

    out = Output("afpacket", ["eth0", "eth1"], batch_records=100, batch_interval=0.03, frames_per_second=10,
                 frames_batch=4, snaplen=20, send=send, clock=clock)
    frame = eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1, 2, b"x" * 50)))
    out.add_rows(0, rows_for([frame] * 250), rate=1)
    assert [m.count for m, _ in sent] == [100, 100]  # type: ignore[attr-defined]
    out.flush_due()
    assert len(sent) == 2  # the rest is young
    clock.t += 0.05
    out.flush_due()
    assert [m.count for m, _ in sent] == [100, 100, 50]  # type: ignore[attr-defined]
    out.add_rows(1, rows_for([frame] * 10), rate=1)
    out.add_rows(1, rows_for([frame] * 5), rate=8)  # a new rate: what came before goes first
    out.flush_all()
    batches = [m for m, _ in sent if isinstance(m, PacketBatch)]
    assert [(b.iface, b.count, b.sample_rate, b.seq) for b in batches[3:]] == [("eth1", 10, 1, 0), ("eth1", 5, 8, 1)]
    recs = np.frombuffer(batches[-1].records, dtype=RECORD_DTYPE)
    assert set(recs["iface"].tolist()) == {1}
    ok["packets"] = False
    out.add_rows(0, rows_for([frame] * 3), rate=1)
    out.flush_all()
    assert out.counters["batches_dropped"] == 1 and out.send_drops == [1, 0]
    # frames: bounded by the budget (10/s), cut to snaplen, batched by frames_batch
    assert out.frames_wanted(50) == 10 and out.frames_wanted(5) == 0
    for i in range(6):
        out.add_frame(0, 1, 1, 1.0 + i, len(frame), frame)
    out.flush_frames()
    fb = [m for m, _ in sent if isinstance(m, FrameBatch)]
    assert [len(f.frames) for f in fb] == [4, 2] and all(len(x[2]) == 20 for f in fb for x in f.frames)
    clock.t += 0.5
    assert out.frames_wanted(50) == 5
    # a whole read's frames at once: the same batches as one by one (cut at frames_batch, a new rate flushes)
    rows = [[2.0 + i, 60 + i, bytes([i]) * 20] for i in range(9)]
    out.add_frames(0, 1, 1, rows[:7])
    out.add_frames(0, 1, 4, rows[7:])
    out.flush_frames()
    fb = [m for m, _ in sent if isinstance(m, FrameBatch)][2:]
    assert [(len(f.frames), f.sample_rate) for f in fb] == [(4, 1), (3, 1), (2, 4)]
    assert [x for f in fb for x in f.frames] == rows


def test_frame_rows_cut_each_frame_to_snaplen() -> None:
    buf = bytes(range(256)) * 4
    offs, caps = np.array([0, 100, 600]), np.array([50, 10, 300])
    rows = frame_rows(buf, np.array([1.5, 2.5, 3.5]), np.array([60, 10, 1500]), offs, caps, snaplen=40)
    assert rows == [[1.5, 60, buf[0:40]], [2.5, 10, buf[100:110]], [3.5, 1500, buf[600:640]]]


def test_frame_budget_follows_a_file_clock() -> None:
    b = FrameBudget(100, Clock())
    assert b.take(1000, now=5.0) == 100
    assert b.take(1000, now=5.5) == 50
    assert FrameBudget(0, Clock()).take(10) == 0


def test_default_route_interface(tmp_path: Path) -> None:
    hdr = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    (tmp_path / "route").write_text(hdr + "eth1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
                                    "eth0\t00000000\t010200C0\t0003\t0\t0\t10\t00000000\t0\t0\t0\n"
                                    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert default_route_interface(tmp_path) == "eth0"  # the lowest metric
    (tmp_path / "route").write_text(hdr)
    (tmp_path / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001"
        " 00000400 00000001 00000000 00000003  ens3\n"
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000"
        " 00000100 00000001 00000000 00000001  ens3\n")
    assert default_route_interface(tmp_path) == "ens3"
    (tmp_path / "ipv6_route").write_text("")
    with pytest.raises(CaptureError, match="no default route"):
        default_route_interface(tmp_path)


def test_interface_counters_are_read_from_sysfs(tmp_path: Path) -> None:
    stats = tmp_path / "eth9" / "statistics"
    stats.mkdir(parents=True)
    for name, value in (("rx_packets", 7), ("rx_bytes", 700), ("tx_packets", 3), ("tx_bytes", 300)):
        (stats / name).write_text(f"{value}\n")
    s = IfStats("eth9", tmp_path)
    assert s.read() == IfCounters(rx_packets=7, rx_bytes=700, tx_packets=3, tx_bytes=300)
    (stats / "rx_packets").write_text("12\n")  # kept open: a later read sees the new value
    assert s.read().rx_packets == 12
    (stats / "tx_bytes").write_text("junk\n")
    with pytest.raises(CaptureError, match="counters unreadable"):
        s.read()
    s.close()
    with pytest.raises(CaptureError, match="no counters"):
        IfStats("fwcapnosuchif0")


def test_loopback_counters_move_with_traffic() -> None:
    s = IfStats("lo")
    try:
        before = s.read()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("127.0.0.1", 0))
            for _ in range(5):
                tx.sendto(b"x" * 100, rx.getsockname())
        after = eventually(lambda: (c := s.read()).rx_packets >= before.rx_packets + 5 and c)
        assert after.tx_packets >= before.tx_packets + 5
        assert after.rx_bytes >= before.rx_bytes + 5 * 100
    finally:
        s.close()


def test_connection_count_is_cheap_and_sane() -> None:
    assert _tcp_inuse("sockets: used 3\nTCP: inuse 7 orphan 0 tw 2 alloc 9 mem 1\n") == 7
    assert _tcp_inuse("TCP6: inuse 3\n") == 3
    srv = socket.create_server(("127.0.0.1", 0))  # a listener, a client and its accepted peer
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    try:
        assert ConnCounter("sockstat").count() >= 3
    finally:
        for sock in (peer, cli, srv):
            sock.close()
    assert ConnCounter("off").count() == -1
    assert ConnCounter("auto").source in ("sockstat", "conntrack")


@pytest.mark.parametrize("bad", [
    {"source": "tap"}, {"source": "pcap"}, {"interfaces": ["x" * 16]}, {"interfaces": ["../etc"]},
    {"speed": -1.0}, {"local_networks": ["10.0.0.0/33"]}, {"budget_pps": 10}, {"snaplen": 40},
    {"ring_block_size": 5000}, {"ring_blocks": 1}, {"fanout_mode": "rnd"}, {"batch_records": 0},
    {"conn_source": "netstat"}, {"sample_rate": -2}, {"bogus_key": 1},
])
def test_bad_capture_settings_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="capture"):
        config_from_dict({"capture": bad})


def test_capture_defaults_are_valid() -> None:
    cfg = config_from_dict({"capture": {"source": "pcap", "pcap_file": "/x.pcap", "speed": 2,
                                        "local_networks": ["10.0.0.0/8", "fd00::/8"]}})
    assert cfg.capture.speed == 2.0
    d = config_from_dict({}).capture
    assert d.source == "afpacket" and d.interfaces == ["auto"] and d.budget_pps > 0
    assert addr_bytes("10.0.0.1")[:12] == b"\0" * 10 + b"\xff\xff"


def test_ring_blocks_are_sized_to_the_budget_unless_set() -> None:
    """ring_block_size = 0 (default): one block holds ring_block_timeout_ms of budget_pps full frames."""
    sized = lambda **kw: config_from_dict({"capture": kw}).capture.ring_block_bytes  # noqa: E731
    assert sized(budget_pps=20_000) == 128 * 1024  # 200 frames of 352 bytes in the 10 ms block timeout
    assert sized(budget_pps=2000) == 64 * 1024  # the floor
    assert sized(budget_pps=50_000) == 256 * 1024
    assert sized(budget_pps=1_000_000) == 512 * 1024  # the ceiling (the size before sizing)
    assert sized(budget_pps=20_000, ring_block_timeout_ms=50) == 512 * 1024
    assert sized(budget_pps=20_000, snaplen=96) == 64 * 1024
    assert sized(ring_block_size=1 << 20) == 1 << 20  # an explicit size is kept
    assert sized(budget_pps=100, ring_block_timeout_ms=1, snaplen=65535) == 128 * 1024  # one frame fits
    with pytest.raises(ConfigError, match="ring_block_size"):
        config_from_dict({"capture": {"ring_block_size": 4096, "snaplen": 9000}})


def test_output_says_when_the_oldest_batch_is_due() -> None:
    clock = Clock()
    out = Output("pcap", ["pcap"], 100, 0.03, 0, 10, 64, lambda m, c: True, clock)
    assert out.due_in_ms() == NOTHING_DUE_MS  # nothing pending: no reason to wake
    out.add_rows(0, rows_for([eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1, 2)))]), 1)
    clock.t += 0.01
    assert out.due_in_ms() == pytest.approx(20.0)
    clock.t += 0.05
    assert out.due_in_ms() == 0.0
