"""The generator's command writes captures that real tools read as the intended traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from floodwatch.cli import main
from floodwatch.trafficgen.vectors import VECTORS

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def tshark(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return [line.split("\t") for line in out.stdout.splitlines()]


@needs_tshark
@pytest.mark.parametrize(("vector", "v6", "fields", "want"), [
    ("ntp_amplification", False, ("udp.srcport", "ntp.priv.reqcode"), ["123", "42"]),
    ("memcached_amplification", True, ("udp.srcport", "ipv6.dst"), ["11211", "fd00::1"]),
    ("xmas_flood", False, ("tcp.flags.fin", "tcp.flags.push", "tcp.flags.urg", "tcp.flags.syn"),
     ["1", "1", "1", "0"]),
    ("http_flood", True, ("http.request.method", "tcp.dstport"), ["GET", "80"]),
    ("icmp_flood", True, ("icmpv6.type",), ["128"]),
])
def test_detect_traffic_gen_command_writes_real_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        vector: str, v6: bool, fields: tuple[str, ...],
                                                        want: list[str]) -> None:
    out = tmp_path / f"{vector}.pcap"
    argv = ["traffic", "gen", vector, "--out", str(out), "--count", "50", "--pps", "1000"] + (["--ipv6"] if v6 else [])
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["packets"] == 50
    rows = tshark(out, *fields)
    assert len(rows) == 50 and all(r == want for r in rows), rows[:3]


def test_detect_traffic_gen_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["traffic", "gen", "syn_flood", "--out", str(tmp_path / "x.pcap"), "--dst", "fd00::1"]) == 2
    assert "not an IPv4 address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["traffic", "gen", "no_such_vector", "--out", str(tmp_path / "y.pcap")])
    assert main(["traffic", "list"]) == 0
    assert capsys.readouterr().out.split() == list(VECTORS)
