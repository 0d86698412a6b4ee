"""The recorder actor as a real process on real sockets, with fake peers: a PUSH for frames, the bus
harness for incidents, a SUB for pcap.saved / incident.enriched. Files are checked with tshark/capinfos."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from floodwatch import messages
from floodwatch.messages import (
    FrameBatch,
    IncidentEnriched,
    IncidentOpened,
    IncidentResolved,
    PcapSaved,
    StreamEnded,
)
from tests.helpers import REPO, BusHarness, Subscriber, base_config, eventually, start_actor, stop_process, write_config
from tests.recorder.recorder_packets import dns_amp_frame, incident, quiet_frame

T0 = 1_700_000_000.0  # capture clock of the fake frames


class Rig:
    """One recorder process, a frame pusher and a subscriber for what it publishes."""

    def __init__(self, harness: BusHarness, tmp: Path, **settings: Any) -> None:
        self.h = harness
        self.out = Path(settings.setdefault("output_dir", str(tmp / "pcaps")))
        settings.setdefault("close_delay", 0.3)
        settings.setdefault("retention_interval", 3600.0)
        cfg = write_config(tmp / "recorder.toml", base_config(tmp, harness.endpoints, recorder=settings))
        self.log = tmp / "recorder.log"
        self.proc = start_actor("recorder", cfg, self.log)
        harness.wait_ready("recorder")
        harness.wait_subscribed(IncidentOpened.TOPIC)
        self.sub: Subscriber = harness.subscriber(PcapSaved, IncidentEnriched)
        self.push = harness.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(harness.endpoints.frames)

    def frames(self, frames: list[bytes], t: float, step: float = 0.001, rate: int = 1) -> None:
        batch = [[t + i * step, len(f), f] for i, f in enumerate(frames)]
        self.push.send(messages.encode(FrameBatch(iface="veth0", linktype=1, sample_rate=rate, frames=batch)))

    def counters(self) -> dict[str, Any]:
        return self.h.counters("recorder")

    def wait_counter(self, name: str, value: int, timeout: float = 20.0) -> None:
        eventually(lambda: self.counters().get(name) == value, timeout, message=f"recorder {name} == {value}")

    def open(self, key: str, subtype: str = "dns_amplification") -> None:
        before = int(self.counters().get("recordings", 0))
        self.h.publish(incident(IncidentOpened, key, subtype))
        self.wait_counter("recordings", before + 1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.push.close(0)
        self.sub.close()
        assert stop_process(self.proc) == 0, self.log.read_text()[-3000:]


@pytest.fixture
def rig_factory(harness: BusHarness, tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(**settings: Any) -> Rig:
        rig = Rig(harness, tmp_path, **settings)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def capinfos(path: str) -> dict[str, str]:
    out = subprocess.run(["capinfos", "-M", "-c", "-E", "-t", "-T", "-r", path], check=True,
                         capture_output=True, text=True).stdout.strip().split("\t")
    return {"type": out[1], "encapsulation": out[2], "packets": out[3]}


def tshark_fields(path: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", path, "-T", "fields"] + [x for f in fields for x in ("-e", f)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_recorder_saves_ring_and_attack_then_dissects(rig_factory: Any) -> None:
    rig = rig_factory(ring_packets=100)
    rig.frames([quiet_frame(i) for i in range(150)], T0)  # more than the ring holds
    rig.wait_counter("ring_frames", 100)
    rig.open("inc-dns-1")
    for b in range(4):
        rig.frames([dns_amp_frame(b * 100 + i) for i in range(100)], T0 + 10 + b)
    rig.wait_counter("frames", 550)
    rig.h.publish(incident(IncidentResolved, "inc-dns-1", ended_at=T0 + 100))
    saved = rig.sub.get(PcapSaved, timeout=20)
    assert saved.incident_key == "inc-dns-1" and saved.packets == 500 and not saved.truncated
    assert saved.linktype == 1 and saved.sample_rate == 1
    path = Path(saved.path)
    assert path.name == "inc-dns-1.pcapng" and path.parent == rig.out
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert saved.bytes == path.stat().st_size
    assert saved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert capinfos(saved.path) == {"type": "pcapng", "encapsulation": "ether", "packets": "500"}
    rows = tshark_fields(saved.path, "udp.srcport", "frame.time_epoch")
    assert [r[0] for r in rows[:100]] == ["1111"] * 100  # the packets from before the attack lead
    assert {r[0] for r in rows[100:]} == {"53"}
    assert float(rows[0][1]) == pytest.approx(T0 + 0.05, abs=1e-5)  # the oldest 50 fell out of the ring
    assert not [p for p in os.listdir(rig.out) if p.endswith(".part")]

    enriched = rig.sub.get(IncidentEnriched, timeout=60)
    assert enriched.incident_key == "inc-dns-1"
    assert enriched.attack_subtype == "dns_amplification" and enriched.findings["verdict"] == "confirmed"
    assert enriched.findings["dns_query_names"]["top"][0] == ["amp.example.org", 400]
    assert enriched.findings["dns_query_types"]["top"][0] == ["ANY", 400]
    on_disk = json.loads(Path(enriched.findings_path).read_text())
    assert on_disk["summary"]["attack_subtype"] == "dns_amplification" and on_disk["packets"] == 500
    assert Path(enriched.findings_path).parent == rig.out


def test_recorder_limits_hold_during_a_long_flood(rig_factory: Any) -> None:
    rig = rig_factory(ring_packets=50, max_packets=300, format="pcap", file_mode=0o600)
    rig.frames([quiet_frame(i) for i in range(50)], T0)
    rig.wait_counter("ring_frames", 50)
    rig.open("inc-flood")
    for b in range(30):  # 3,000 attack frames: ten times the limit
        rig.frames([dns_amp_frame(b * 100 + i) for i in range(100)], T0 + 10 + b * 0.1, step=0.0005)
    saved = rig.sub.get(PcapSaved, timeout=20)
    assert saved.packets == 300 and saved.truncated
    assert capinfos(saved.path) == {"type": "pcap", "encapsulation": "ether", "packets": "300"}
    assert stat.S_IMODE(Path(saved.path).stat().st_mode) == 0o600
    rig.wait_counter("frames", 3050)
    assert capinfos(saved.path)["packets"] == "300"  # nothing more was appended after the limit
    assert rig.counters()["truncated"] == 1 and rig.counters()["open_captures"] == 0


def test_recorder_time_limit_and_stream_end(rig_factory: Any, tmp_path: Path) -> None:
    out = tmp_path / "pcaps"
    out.mkdir()
    for name in ("expired.pcapng", "expired.findings.json", ".crashed.pcapng.part", "kept.pcap", "notes.txt"):
        (out / name).write_bytes(b"x" * 100)
    for name in ("expired.pcapng", "expired.findings.json"):
        os.utime(out / name, (T0, T0))  # long past the 30-day retention
    rig = rig_factory(ring_packets=10, max_seconds=5.0, output_dir=str(out))
    eventually(lambda: sorted(os.listdir(out)) == ["kept.pcap", "notes.txt"], 10,
               message="retention and crash leftovers cleaned at start")
    rig.open("inc-slow")
    for s in range(10):  # one frame batch per capture second, for 10 s
        rig.frames([dns_amp_frame(s * 10 + i) for i in range(10)], T0 + s)
    saved = rig.sub.get(PcapSaved, timeout=20)
    assert saved.truncated and saved.packets == 51  # every frame up to 5 s after the first one
    rig.open("inc-end")
    rig.frames([dns_amp_frame(i) for i in range(20)], T0 + 20)
    rig.push.send(messages.encode(StreamEnded(source="pcap", packets=1000, ts=T0 + 21)))
    saved = rig.sub.get(PcapSaved, timeout=20)
    assert saved.incident_key == "inc-end" and not saved.truncated
    assert saved.packets == 30  # 10 frames from the ring, then 20
    assert capinfos(saved.path)["packets"] == "30"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "fwrectmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounts:
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_recorder_disk_full_leaves_no_half_file(rig_factory: Any, tmpfs: Any) -> None:
    out = tmpfs("full", "size=256k,mode=0750")
    rig = rig_factory(output_dir=str(out), min_free_bytes=0, max_total_bytes=0, ring_packets=10)
    rig.open("inc-full")
    for b in range(20):  # ~0.7 MB of frames: more than the file system holds
        rig.frames([dns_amp_frame(b * 100 + i) for i in range(100)], T0 + b)
    rig.wait_counter("write_errors", 1)
    assert rig.alive()
    assert os.listdir(out) == []  # neither the capture nor its temporary file
    assert "abandoned" in rig.log.read_text() and "No space left" in rig.log.read_text()
    assert not [m for m in rig.sub.drain(0.5) if isinstance(m, PcapSaved)]
    # the actor goes on: a small incident afterwards is saved
    rig.open("inc-small")
    rig.frames([dns_amp_frame(i) for i in range(20)], T0 + 100)
    rig.push.send(messages.encode(StreamEnded(source="pcap", packets=20, ts=T0 + 101)))
    saved = rig.sub.get(PcapSaved, timeout=20)
    assert saved.incident_key == "inc-small" and capinfos(saved.path)["packets"] == "30"  # ring 10 + 20
    eventually(lambda: rig.h.heartbeats["recorder"].health == "ok", 10, message="healthy again")


def test_recorder_unwritable_directory_is_counted(rig_factory: Any, tmpfs: Any) -> None:
    out = tmpfs("readonly", "size=1m,ro")
    rig = rig_factory(output_dir=str(out), min_free_bytes=0, max_total_bytes=0, ring_packets=10)
    rig.frames([quiet_frame(i) for i in range(10)], T0)
    rig.wait_counter("ring_frames", 10)
    rig.h.publish(incident(IncidentOpened, "inc-ro"))
    rig.wait_counter("write_errors", 1)
    rig.frames([dns_amp_frame(i) for i in range(50)], T0 + 1)
    rig.h.publish(incident(IncidentResolved, "inc-ro", ended_at=T0 + 100))
    rig.wait_counter("frames", 60)
    assert rig.alive() and os.listdir(out) == []
    eventually(lambda: "Read-only file system" in rig.h.heartbeats["recorder"].health, 10, message="health")
    assert not [m for m in rig.sub.drain(1.0) if isinstance(m, PcapSaved)]


def _save_one(rig: Rig, key: str) -> PcapSaved:
    rig.open(key)
    rig.frames([dns_amp_frame(i) for i in range(30)], T0)
    rig.push.send(messages.encode(StreamEnded(source="pcap", packets=30, ts=T0 + 1)))
    return rig.sub.get(PcapSaved, timeout=20)


def test_recorder_hanging_dissection_is_cut_off(rig_factory: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "fake-tshark.pid"
    fake = tmp_path / "fake-tshark"
    fake.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 600\n")
    fake.chmod(0o755)
    # dissect_user "": the fake runs as root so it can write its pid into our private tmp dir
    rig = rig_factory(tshark_path=str(fake), dissect_timeout=2.0, dissect_user="")
    saved = _save_one(rig, "inc-hang")
    assert capinfos(saved.path)["packets"] == "30"  # the capture is unaffected
    rig.wait_counter("dissect_timeouts", 1, timeout=30)
    pid = int(pidfile.read_text())
    eventually(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
               10, message="the hung tshark was killed")
    assert "cut off after 2 s" in rig.log.read_text()
    assert not [m for m in rig.sub.drain(0.3) if isinstance(m, IncidentEnriched)]
    assert rig.alive()


def test_recorder_missing_tshark_is_reported(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory(tshark_path=str(tmp_path / "no-such-tshark"))
    saved = _save_one(rig, "inc-notshark")
    assert Path(saved.path).exists()
    rig.wait_counter("dissect_failed", 1, timeout=30)
    assert "tshark not found" in rig.log.read_text()
    assert not Path(saved.path).with_suffix(".findings.json").exists()
    assert rig.alive()


@pytest.mark.slow
def test_recorder_analyze_writes_captures_to_pcap_dir(pcaps_dir: Path, tmp_path: Path) -> None:
    """`floodwatch analyze FILE --pcap-dir DIR`: the whole pipeline, the recorder writing into DIR."""
    src = tmp_path / "snmp.pcapng"
    src.write_bytes((pcaps_dir / "amp.UDP.snmp.src161.pcapng").read_bytes())
    out = tmp_path / "captures"
    proc = subprocess.run([sys.executable, "-m", "floodwatch.cli", "analyze", str(src), "--pcap-dir", str(out),
                           "--pps-threshold", "1000", "--flush-timeout", "60", "--timeout", "240"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [capture] = list(out.glob("*.pcapng"))
    assert f"pcap {capture}" in proc.stdout
    info = capinfos(str(capture))
    assert info["encapsulation"] == "ether" and int(info["packets"]) > 100
    findings = json.loads(capture.with_suffix(".findings.json").read_text())
    assert findings["summary"]["attack_subtype"] == "snmp_amplification"
    assert findings["packets"] == int(info["packets"])
