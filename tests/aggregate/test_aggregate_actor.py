"""The aggregator actor as a real process on real ZeroMQ sockets: a fake capture (plain PUSH) sends
batches parsed from a real capture file, a SUB checks what the actor publishes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from floodwatch import messages
from floodwatch.messages import (
    ConfigReceived,
    PacketBatch,
    QuietWindows,
    StreamEnded,
    TrafficSecond,
    TrafficSummary,
    TrafficWindow,
)
from tests.aggregate.agg_factory import batch, pcap_batches, records
from tests.helpers import BusHarness, base_config, eventually, start_actor, stop_process, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def actor(harness: BusHarness, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    cfg = base_config(tmp_path, harness.endpoints, aggregator={"lateness": 0.2})
    path = write_config(tmp_path / "fw.toml", cfg)
    proc = start_actor("aggregator", path, tmp_path / "aggregator.log")
    try:
        harness.wait_ready("aggregator", timeout=30)
        yield proc
    finally:
        code = stop_process(proc)
        log = (tmp_path / "aggregator.log").read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def push(harness: BusHarness) -> Iterator[zmq.Socket]:
    sock = harness.ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100)
    sock.connect(harness.endpoints.packets)
    yield sock
    sock.close(0)


@pytest.fixture
def subs(harness: BusHarness) -> Iterator[list]:
    """Subscribers made by the test, closed afterwards (an open socket would hang the context)."""
    made: list = []
    yield made
    for sub in made:
        sub.close()


def send(sock: zmq.Socket, msg: messages.Message) -> None:
    assert sock.poll(10_000, zmq.POLLOUT), "aggregator does not take batches"
    sock.send(messages.encode(msg))


def test_aggregate_actor_publishes_windows_seconds_summary_then_stream_end(
    harness: BusHarness, actor: subprocess.Popen[bytes], push: zmq.Socket, pcaps_dir: Path, subs: list
) -> None:
    sub = harness.subscriber(TrafficWindow, TrafficSecond, TrafficSummary, StreamEnded)
    subs.append(sub)
    path = pcaps_dir / "pkt.TCP.synflood.spoofed.pcap"
    total = 0
    for b in pcap_batches(path, size=2000):
        send(push, b)
        total += b.count
    send(push, StreamEnded(source="pcap", packets=total, ts=0.0))
    seen: list[messages.Message] = []
    while not isinstance(seen[-1:] and seen[-1], StreamEnded):
        seen.append(sub.get(timeout=30))
    windows = [m for m in seen if isinstance(m, TrafficWindow)]
    summary = [m for m in seen if isinstance(m, TrafficSummary)]
    assert len(summary) == 1 and isinstance(seen[-2], TrafficSummary)  # summary, then stream.ended
    s = summary[0]
    assert s.packets == total == 37841 and s.protocols["tcp"] == total
    assert s.source_ip_count_exact and s.source_ip_count > 37_000
    assert s.top_dst_ports[0] == {"port": 25565, "proto": "tcp", "count": total}
    assert sum(w.packets_in for w in windows) == total
    assert all(abs(w.t_end - w.t_start - 0.1) < 1e-6 for w in windows)
    assert any(w.tcp_flags["SYN"] > 0 and w.victims and w.victims[0]["ip"] == "10.10.10.10" for w in windows)
    assert any(isinstance(m, TrafficSecond) for m in seen)
    assert "geo" in s.extra and sum(s.extra["geo"].values()) > 0
    assert sum(sum(w.geo.values()) for w in windows) > 0  # the windows' countries, for the incidents
    eventually(lambda: harness.counters("aggregator").get("records") == total, 10)


def test_aggregate_actor_counts_bad_input_and_takes_ioc_patterns(
    harness: BusHarness, actor: subprocess.Popen[bytes], push: zmq.Socket, subs: list
) -> None:
    sub = harness.subscriber(TrafficWindow)
    subs.append(sub)
    good = batch(records(3, ts=2000.0))
    send(push, PacketBatch(**{**good.to_dict(), "count": 4}))  # 3 records claimed as 4
    push.send(b"\x93\x01not a message")
    eventually(lambda: harness.counters("aggregator").get("bad_batches") == 1, 15)
    eventually(lambda: harness.counters("aggregator").get("bad_messages", 0) >= 1, 15)

    harness.wait_subscribed(ConfigReceived.TOPIC)
    harness.publish(ConfigReceived(fetched_at=0.0, node_id=1, pps_threshold=None, bps_threshold=None,
                                   baseline={}, ioc_patterns=[{"pattern": "EVILBOT-77", "name": "evil",
                                                               "attack_family": "botnet"}]))
    payload = b"xx EVILBOT-77 yy".ljust(32, b"\x00")

    sent = [0.0]

    def ioc_counted() -> bool:  # send until the rebuilt matcher is in use (config and bulk race)
        sent[0] += 1.0
        send(push, batch(records(10, ts=2000.0 + sent[0], proto=17, flags=0, paylen=40,
                                 payload=np.array([payload] * 10)), rate=2))
        return any(w.signatures.get("ioc:evil") == 20 for w in sub.drain(0.3) if isinstance(w, TrafficWindow))

    eventually(ioc_counted, 20, interval=0.0)


def test_aggregate_actor_live_counters_give_exact_windows(
    harness: BusHarness, actor: subprocess.Popen[bytes], push: zmq.Socket, subs: list
) -> None:
    from tests.aggregate.agg_factory import counters

    sub = harness.subscriber(TrafficWindow, TrafficSecond)
    subs.append(sub)
    for i in range(25):  # 2.4 s of a live interface: counters every 100 ms, sampled batches between
        ts = 3000.0 + i * 0.1
        send(push, counters(ts, 10_000 + i * 5000, 600_000 + i * 5000 * 60, tx=i * 50, txb=i * 50 * 1500,
                            conn=42))
        send(push, batch(records(100, ts=ts + 0.05, proto=17, flags=0), rate=50))
    got: list[TrafficWindow] = []
    def twenty() -> bool:
        got.extend(m for m in sub.drain(0.2) if isinstance(m, TrafficWindow))
        return len(got) >= 20

    eventually(twenty, 20)
    assert all(w.exact and w.packets_in == 5000 and w.bytes_in == 300_000 for w in got[:20])
    assert all(w.packets_out == 50 and w.conn_count == 42 for w in got[:20])
    assert all(w.proto_in["udp"] == 5000 and w.sample_rate == 50.0 for w in got[:20])


def test_aggregate_actor_sends_a_silent_seconds_windows_as_one_message(
    harness: BusHarness, actor: subprocess.Popen[bytes], push: zmq.Socket, subs: list
) -> None:
    """A silent link (capture reads its counters once a second): each second's ten empty windows go as one
    traffic.quiet, which stands for every one of them; the first window with traffic goes out alone."""
    from tests.aggregate.agg_factory import counters

    sub = harness.subscriber(TrafficWindow, QuietWindows)
    subs.append(sub)
    for i in range(5):
        send(push, counters(4000.0 + i, 10_000, 600_000, conn=7))
    got: list[messages.Message] = []

    def three_runs() -> bool:
        got.extend(sub.drain(0.2))
        return sum(isinstance(m, QuietWindows) for m in got) >= 3

    eventually(three_runs, 20)
    runs = [m for m in got if isinstance(m, QuietWindows)]
    assert [r.count for r in runs[1:]] == [10] * (len(runs) - 1), [r.count for r in runs]
    assert not [m for m in got if isinstance(m, TrafficWindow)]
    windows = [w for r in runs for w in r.windows()]
    first = round(windows[0].t_start * 10)
    assert [round(w.t_start * 10) for w in windows] == list(range(first, first + len(windows)))
    assert all(w.exact and w.packets_in == 0 and w.conn_count == 7 and not w.src_distinct for w in windows)
    # traffic after the silence: its window is not held back nor merged
    send(push, batch(records(50, ts=4004.95, proto=17, flags=0)))
    send(push, counters(4005.0, 10_050, 603_000, conn=7))
    send(push, counters(4005.3, 10_050, 603_000, conn=7))  # lateness 0.2: closes the window of 4004.9
    busy = eventually(lambda: next((m for m in sub.drain(0.2) if isinstance(m, TrafficWindow) and m.sampled), None),
                      20)
    assert busy.t_start == pytest.approx(4004.9) and busy.packets_in == 50 and busy.sampled == 50
    eventually(lambda: harness.counters("aggregator").get("quiet_runs", 0) >= 3, 15)
