"""`floodwatch analyze` of a capture of flow export traffic: softflowd's IPFIX export of a flood, captured
as UDP frames, run through the real collector, aggregator and detector processes."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.trafficgen import packets as P
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.helpers import PYTHON, REPO

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not shutil.which("softflowd"), reason="no softflowd")]
VICTIM = "198.18.0.1"


def export_capture(tmp_path: Path, version: int) -> Path:
    """softflowd -r of an NTP flood, its datagrams received here and written as a capture."""
    flood = tmp_path / "flood.pcap"
    write_pcap(flood, paced(frames_for(VectorSpec("ntp_amplification", dst=VICTIM, sources=500)), 10_000, 20_000,
                            1_700_000_000.0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        subprocess.run(["softflowd", "-r", str(flood), "-n", f"127.0.0.1:{port}", "-v", str(version), "-d"],
                       check=True, timeout=60, capture_output=True)
        sock.setblocking(False)
        frames = []
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            frames.append(P.ether(P.ip_packet(P.addr("192.0.2.1"), P.addr("192.0.2.10"), 17,
                                              P.udp(P.addr("192.0.2.1"), P.addr("192.0.2.10"), 40000, 4739, data),
                                              64), False))
    assert frames
    out = tmp_path / "export.pcap"
    t0 = time.time()
    write_pcap(out, [(t0 + i * 0.001, f) for i, f in enumerate(frames)])
    return out


def test_analyze_reads_a_capture_of_ipfix_export(tmp_path: Path) -> None:
    path = export_capture(tmp_path, 10)
    out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "analyze", str(path), "--json", "--pps-threshold", "2000",
                          "--local-net", "198.18.0.0/24"], cwd=REPO, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    events = [x for x in lines if x["type"] == "incident"]
    assert events and events[0]["event"] == "opened", lines[-3:]
    assert VICTIM in events[0]["target_ips"]
    assert (events[0]["attack_family"], events[0]["attack_subtype"]) == ("udp_flood", "ntp_amplification")
