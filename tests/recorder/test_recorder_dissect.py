"""Forensic dissection in its real child process (with real tshark) on crafted and real captures."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from floodwatch.recorder import evidence
from floodwatch.recorder.jobs import DissectJob, JobResult, JobSpec
from floodwatch.recorder.ring import Frame
from floodwatch.recorder.writer import CaptureWriter, Limits
from tests.helpers import eventually
from tests.recorder.recorder_packets import ip4, mixed_frames, udp

T0 = 1_700_000_000.0


def run_job(pcap: Path, subtype: str = "", iocs: list[Any] | None = None, timeout: float = 60.0) -> JobResult:
    spec = JobSpec("k", str(pcap), str(pcap.with_suffix(".findings.json")), subtype, iocs or [])
    job = DissectJob(spec, "tshark", timeout, memory_mb=2048)
    job.start()
    res = eventually(job.poll, timeout + 10, interval=0.05, message="dissection finished")
    assert res is not None
    return res


def top(findings: dict[str, Any], table: str) -> dict[str, int]:
    return {k: v for k, v in findings[table]["top"]}


def write(tmp_path: Path, frames: list[bytes]) -> Path:
    w = CaptureWriter(tmp_path, "mixed.pcapng", "pcapng", 1, 65535, Limits())
    w.write([Frame(T0 + i, len(f), f) for i, f in enumerate(frames)])
    return Path(w.commit().path)


def test_recorder_dissects_every_protocol_it_names(tmp_path: Path) -> None:
    loic = ip4(17, udp(40010, 9999, b"xx A cat is fine too yy"))
    pcap = write(tmp_path, [*mixed_frames(), loic])
    iocs = [{"pattern": "EvilBot", "name": "evil-agent", "attack_family": "http_flood"}, "isc.org",
            "hex:deadbeefcafe"]
    res = run_job(pcap, "ntp_amplification", iocs)
    assert res.ok, res.error
    f = res.findings
    assert f is not None and f["packets"] == 7 and f["status"] == "ok"
    assert top(f, "dns_query_names") == {"isc.org": 1} and top(f, "dns_query_types") == {"ANY": 1}
    assert top(f, "ntp_request_codes") == {"MON_GETLIST_1": 1} and top(f, "ntp_modes") == {"private": 1}
    assert top(f, "memcached_commands") == {"stats": 1}
    assert top(f, "ssdp_methods") == {"M-SEARCH": 1} and top(f, "ssdp_header_st") == {"ssdp:all": 1}
    assert top(f, "http_methods") == {"GET": 1} and top(f, "http_hosts") == {"victim.example": 1}
    assert top(f, "http_uris") == {"/wp-login.php?x=1": 1} and top(f, "http_user_agents") == {"EvilBot/1.0": 1}
    assert top(f, "tcp_options")["MSS,NOP,WS,SACK_PERM,TS"] == 1
    assert top(f, "tcp_mss") == {"1460": 1} and top(f, "tcp_wscale") == {"7": 1}
    matches = {m["name"]: m for m in f["summary"]["ioc_matches"]}
    assert set(matches) == {"evil-agent", "isc.org", "loic"}
    assert matches["loic"]["kind"] == "botnet" and matches["evil-agent"]["count"] == 1
    # one NTP request does not make an NTP amplification: not confirmed, nothing proposed
    assert f["summary"]["attack_subtype"] == "" and f["summary"]["verdict"] == "unconfirmed"
    assert Path(res.spec.out).exists()


def test_recorder_judge_confirms_refines_or_stays_silent() -> None:
    ev = {"dns_amplification": 400, "ack_flood": 2000, "syn_flood": 3}
    assert evidence.judge(ev, 4000, "dns_amplification", 10, 0.2) == ("dns_amplification", "confirmed")
    assert evidence.judge(ev, 4000, "dns_amplification+ack_flood", 10, 0.2)[1] == "confirmed"
    assert evidence.judge(ev, 4000, "syn_flood", 10, 0.2) == ("ack_flood", "refined")
    assert evidence.judge(ev, 40000, "syn_flood", 10, 0.2) == ("", "unconfirmed")
    assert evidence.judge({}, 0, "", 10, 0.2) == ("", "unconfirmed")


@pytest.fixture
def real(pcaps_dir: Path, tmp_path: Path) -> Any:
    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copyfile(pcaps_dir / name, dst)  # never touch the shared originals
        dst.chmod(0o600)
        return dst

    return copy


def test_recorder_findings_on_real_dns_amplification(real: Any) -> None:
    res = run_job(real("amp.dns.RRSIG.fragmented.pcap"), "dns_amplification")
    assert res.ok, res.error
    f = res.findings
    assert f is not None and f["packets"] == 4412
    assert next(iter(top(f, "dns_query_names"))) == "pizzaseo.com"
    assert next(iter(top(f, "dns_query_types"))) == "RRSIG" and "RRSIG" in top(f, "dns_answer_types")
    assert top(f, "dns_messages")["response"] >= 370
    assert f["ip_fragments"]["total"] > 500
    assert f["summary"]["attack_subtype"] == "dns_amplification" and f["summary"]["verdict"] == "confirmed"


def test_recorder_findings_on_real_snmp_reflection(real: Any) -> None:
    res = run_job(real("amp.UDP.snmp.src161.pcapng"), "snmp_amplification")
    assert res.ok, res.error
    f = res.findings
    assert f is not None
    assert next(iter(top(f, "snmp_pdus"))) == "get-response" and next(iter(top(f, "snmp_communities"))) == "public"
    assert f["evidence"]["snmp_amplification"] > 3000
    assert f["summary"]["attack_subtype"] == "snmp_amplification" and f["summary"]["verdict"] == "confirmed"


def test_recorder_findings_on_real_tcp_floods(real: Any) -> None:
    res = run_job(real("amp.TCP.reflection.SYNACK.pcap"), "udp_flood")  # the detector guessed wrong
    assert res.ok, res.error
    f = res.findings
    assert f is not None and "ACK-SYN" in top(f, "tcp_flags")
    assert f["summary"]["attack_subtype"] == "synack_reflection" and f["summary"]["verdict"] == "refined"


def test_recorder_corrupt_file_dissection_fails_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x02\x00\x04\x00" + b"\xff" * 400)
    started = time.monotonic()
    res = run_job(bad, timeout=20)
    assert not res.ok and not res.timed_out and "tshark" in res.error
    assert time.monotonic() - started < 20
    assert not Path(res.spec.out).exists()
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture file at all" * 10)
    res = run_job(garbage, timeout=20)
    assert not res.ok and "tshark" in res.error


def test_recorder_tshark_runs_unprivileged(tmp_path: Path) -> None:
    """As root, tshark's dissectors (parsing what attackers sent) run as `nobody`, fed on stdin."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change user")
    pcap = write(tmp_path, mixed_frames())
    public = Path(tempfile.mkdtemp(prefix="fwrec-fake-"))
    try:
        public.chmod(0o755)
        fake = public / "tshark"
        fake.write_text('#!/bin/sh\necho "stdin=$(head -c 4 | od -An -tx1 | tr -d \' \') uid=$(id -u)" >&2\nexit 1\n')
        fake.chmod(0o755)
        spec = JobSpec("k", str(pcap), str(pcap.with_suffix(".findings.json")))
        job = DissectJob(spec, str(fake), 30.0)
        job.start()
        res = eventually(job.poll, 40, interval=0.05, message="dissection finished")
        assert res is not None and not res.ok
        assert f"stdin=0a0d0d0a uid={pwd.getpwnam('nobody').pw_uid}" in res.error  # the pcapng, on stdin
    finally:
        shutil.rmtree(public)
