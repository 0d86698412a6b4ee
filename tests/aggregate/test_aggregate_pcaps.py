"""Each shared attack capture through capture's parser and the aggregator: the TrafficSummary equals
what tshark reports (packets, bytes, per-protocol counts, distinct sources, the top ten sources)."""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from floodwatch.aggregate.engine import Engine
from floodwatch.messages import TrafficSummary, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import pcap_batches
from tests.conftest import PCAPS

CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*")) if PCAPS.is_dir() else []
PROTO_NAME = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}
FIELDS = ["frame.len", "ip.src", "ip.proto", "ipv6.src", "ipv6.nxt", "ipv6.fraghdr.nxt"]


def tshark_truth(path: Path) -> dict:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    argv = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "occurrence=f", "-E", "separator=\t"]
    for f in FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
    packets = nbytes = 0
    protocols: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for line in out.splitlines():
        length, ip_src, ip_proto, v6_src, v6_nxt, v6_frag_nxt = line.split("\t")
        packets += 1
        nbytes += int(length)
        proto = int(ip_proto) if ip_proto else None
        if proto is None and v6_src:
            proto = int(v6_frag_nxt) if v6_nxt == "44" and v6_frag_nxt else int(v6_nxt)
        protocols[PROTO_NAME.get(proto, "other") if proto is not None else "other"] += 1
        if ip_src or v6_src:
            sources[str(ipaddress.ip_address(ip_src or v6_src))] += 1
    return {"packets": packets, "bytes": nbytes, "protocols": protocols, "sources": sources}


def summarise(path: Path) -> tuple[TrafficSummary, list[TrafficWindow]]:
    engine = Engine(AggregatorSettings())
    out = []
    for b in pcap_batches(path):
        out += engine.feed_batch(b)
    out += engine.finish()
    summary = out[-1]
    assert isinstance(summary, TrafficSummary)
    return summary, [m for m in out if isinstance(m, TrafficWindow)]


@pytest.mark.parametrize("name", CAPTURES)
def test_aggregate_capture_summary_equals_tshark(name: str, pcaps_dir: Path) -> None:
    path = pcaps_dir / name
    truth = tshark_truth(path)
    s, windows = summarise(path)
    assert (s.packets, s.bytes) == (truth["packets"], truth["bytes"])
    assert s.protocols == {p: truth["protocols"].get(p, 0) for p in ("tcp", "udp", "icmp", "other")}
    assert s.source_ip_count_exact and s.source_ip_count == len(truth["sources"])
    ours = [(e["ip"], e["count"]) for e in s.top_src_ips]
    theirs = truth["sources"].most_common()
    assert [c for _, c in ours] == [c for _, c in theirs[:10]]  # same counts, in order
    assert all(truth["sources"][ip] == c for ip, c in ours)  # each listed source is exact
    tenth = theirs[9][1]
    assert {ip for ip, c in theirs if c > tenth} <= {ip for ip, _ in ours}  # ties at the cut may differ
    # the windows add up to the same totals and follow the file clock
    assert sum(w.packets_in + w.packets_out for w in windows) == truth["packets"]
    assert all(b.t_start > a.t_start for a, b in itertools.pairwise(windows))


def test_aggregate_results_do_not_depend_on_batching(pcaps_dir: Path) -> None:
    """Stream time, not arrival: the same file cut into different batches gives the same messages."""
    path = pcaps_dir / "amp.dns.RRSIG.fragmented.pcap"
    runs = []
    for size in (37, 2048):
        engine = Engine(AggregatorSettings())
        out = []
        for b in pcap_batches(path, size=size):
            out += engine.feed_batch(b)
        runs.append([m.to_dict() for m in out + engine.finish()])
    assert runs[0] == runs[1]
