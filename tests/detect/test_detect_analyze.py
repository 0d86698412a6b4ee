"""`floodwatch analyze` end to end (real capture, aggregator and detector processes) on real captures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.helpers import PYTHON, REPO

pytestmark = pytest.mark.slow


def analyze(path: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "analyze", str(path), "--json", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_detect_analyze_classifies_every_shared_capture(pcaps_dir: Path) -> None:
    expected = {
        "pkt.TCP.synflood.spoofed.pcap": ("syn_flood", "syn_flood", True),
        "amp.UDP.snmp.src161.pcapng": ("udp_flood", "snmp_amplification", False),
        "amp.dns.RRSIG.fragmented.pcap": ("dns_flood", "dns_amplification", False),
        "amp.TCP.reflection.SYNACK.pcap": ("tcp_flood", "synack_reflection", False),
    }
    for name, (family, subtype, spoofed) in expected.items():
        lines = analyze(pcaps_dir / name, "--classify")
        c = [x for x in lines if x["type"] == "classification"]
        assert len(c) == 1, name
        assert (c[0]["attack_family"], c[0]["attack_subtype"], c[0]["spoofing_detected"]) == \
            (family, subtype, spoofed), name
        if "dns" in name:
            assert c[0]["extra"]["fragmented"] is True


def test_detect_analyze_reports_incident_events_with_a_threshold(pcaps_dir: Path) -> None:
    lines = analyze(pcaps_dir / "pkt.TCP.synflood.spoofed.pcap", "--pps-threshold", "2000")
    events = [x for x in lines if x["type"] == "incident"]
    assert next(e["event"] for e in events) == "opened" and events[-1]["event"] == "resolved"
    assert len({e["incident_key"] for e in events}) == 1
    assert all(e["attack_family"] == "syn_flood" and e["protocol_breakdown"] == {"tcp": 100.0} for e in events)
    assert events[-1]["spoofing_detected"] is True
    assert [e["seq"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_detect_analyze_names_generated_vectors(tmp_path: Path, v6: bool) -> None:
    for vector, subtype in (("ntp_amplification", "ntp_amplification"), ("xmas_flood", "xmas_flood")):
        path = tmp_path / f"{vector}.pcap"
        write_pcap(path, paced(frames_for(VectorSpec(vector, v6, variety=500)), 20_000, 20_000, 1_700_000_000.0))
        events = [x for x in analyze(path, "--pps-threshold", "2000") if x["type"] == "incident"]
        assert events and events[0]["event"] == "opened" and events[-1]["event"] == "resolved"
        assert events[0]["attack_subtype"] == subtype
        assert events[0]["target_ips"] == ["fd00::1" if v6 else "198.18.0.1"]


def test_detect_analyze_returns_once_reports_and_captures_are_delivered(pcaps_dir: Path, tmp_path: Path) -> None:
    """`analyze --report-to URL --pcap-dir DIR` against the real embedded server: when it exits 0, the
    server already holds the resolved incident and its capture (the recorder's and the reporter's drain
    events said so), without waiting for the flush timeout."""
    from tests.reporter.support import server

    with server(tmp_path) as srv:
        srv.start()
        node_uuid, api_key = srv.add_node()
        out = subprocess.run(
            [PYTHON, "-m", "floodwatch.cli", "analyze", str(pcaps_dir / "pkt.TCP.synflood.spoofed.pcap"), "--json",
             "--pps-threshold", "2000", "--pcap-dir", str(tmp_path / "captures"), "--report-to", srv.url,
             "--node-uuid", node_uuid, "--api-key", api_key, "--flush-timeout", "120", "--timeout", "240"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        events = [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{"type": "incident"')]
        key = events[-1]["incident_key"]
        [inc] = [i for i in srv.incidents() if i["incident_key"] == key]
        assert inc["status"] == "resolved" and inc["pcap_stored"]
        assert inc["pcap_bytes"] == sum(p.stat().st_size for p in (tmp_path / "captures").glob("*.pcap*")
                                        if not p.name.endswith(".json"))


def test_detect_analyze_makes_raw_frames_only_for_a_recorder(pcaps_dir: Path, tmp_path: Path) -> None:
    """Raw frames go only to the recorder: without --pcap-dir the capture makes none (issue 17: a
    tenth of its work), and what analyze prints is the same as with the recorder taking them."""
    from floodwatch.analyze import analysis_config
    from floodwatch.cli import build_parser

    path = pcaps_dir / "pkt.TCP.synflood.spoofed.pcap"
    parser = build_parser(extensions=("floodwatch.analyze",))
    plain = analysis_config(parser.parse_args(["analyze", str(path)]), tmp_path)
    recorded = analysis_config(parser.parse_args(["analyze", str(path), "--pcap-dir", str(tmp_path / "c")]), tmp_path)
    assert plain["capture"]["frames_per_second"] == 0 and "recorder" not in plain["supervisor"]["actors"]
    assert "frames_per_second" not in recorded["capture"] and "recorder" in recorded["supervisor"]["actors"]
    without = analyze(path, "--classify", "--pps-threshold", "2000")
    with_recorder = analyze(path, "--classify", "--pps-threshold", "2000", "--pcap-dir", str(tmp_path / "c"))
    for lines in (without, with_recorder):
        for line in lines:
            line.pop("incident_key", None)
            line.pop("pcap", None)
    assert [x for x in without if x["type"] != "incident"] == [x for x in with_recorder if x["type"] != "incident"]
    ends = [[x for x in lines if x.get("event") in ("opened", "resolved")] for lines in (without, with_recorder)]
    assert ends[0] == ends[1] and ends[0]  # the same incidents (a recorder adds an update naming its capture)
    assert list((tmp_path / "c").glob("*.pcap*"))  # the recorder did get frames
