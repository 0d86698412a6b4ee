"""Detection latency through the collector: first export datagram sent -> incident.opened on the bus.

The collector, aggregator and detector run as real processes (tests/collector's pipeline: a test bus,
loopback UDP); this process plays the router and stamps the wall time of its first datagram, then
receives incident.opened through the event proxy and stamps its arrival. Same host, same clock.

  sflow  a 20 kpps NTP reflection flood sampled 1 in 100: 7 samples a datagram, sent as they are taken
  ipfix  the same flood as an exporter with a 1 s active timeout reports it: every second, one IPFIX
         datagram of the flows of the second before (so the floor is the active timeout itself)

The detector's threshold is 2 000 pps (the flood is 10x over it). Medians of --runs runs.

    .venv/bin/python benchmarks/collector_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.collector import exportgen as G  # noqa: E402
from floodwatch.messages import IncidentOpened  # noqa: E402
from tests.collector.test_collector_exporters import pipeline  # noqa: E402

PPS = 20_000
RATE = 100
VICTIM = "198.18.0.1"


def sflow_stream(sock: socket.socket, port: int, stop: float) -> None:
    head = G.eth_ipv4_udp("203.0.113.7", VICTIM, 123, 40000, 440)
    per_second = PPS / RATE / 7  # datagrams a second
    n = 0
    start = time.time()
    while time.time() < stop:
        sock.sendto(G.sflow_v5([(head, 482)] * 7, RATE, seq=n * 7), ("127.0.0.1", port))
        n += 1
        time.sleep(max(0.0, start + n / per_second - time.time()))


def ipfix_stream(sock: socket.socket, port: int, stop: float) -> None:
    tmpl = G.template_set(300, G.V4_FIELDS, True)
    n = 0
    while time.time() < stop:  # what the exporter saw in the last second, reported at its end
        time.sleep(1.0 if n else 0.0)
        flows = [(f"203.0.113.{i}", VICTIM, 123, 40000 + i, 17, 0, PPS // 20, PPS // 20 * 468) for i in range(20)]
        sock.sendto(G.ipfix([tmpl, G.data_set(300, G.v4_records(flows))], seq=n), ("127.0.0.1", port))
        n += 1


def one_run(kind: str) -> float:
    with tempfile.TemporaryDirectory() as tmp, pipeline(Path(tmp)) as (harness, ports):
        sub = harness.subscriber(IncidentOpened)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            first = time.time()
            stream = sflow_stream if kind == "sflow" else ipfix_stream
            t = threading.Thread(target=stream, args=(sock, ports[kind], first + 5), daemon=True)
            t.start()
            opened = sub.get(IncidentOpened, timeout=10)
            latency = time.time() - first
            assert VICTIM in opened.target_ips
            t.join()
        sub.close()
        return latency


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for kind in ("sflow", "ipfix"):
        values = [one_run(kind) for _ in range(args.runs)]
        print(f"{kind:6s} first datagram -> incident.opened: median {statistics.median(values) * 1000:.0f} ms, "
              f"max {max(values) * 1000:.0f} ms (runs: {', '.join(f'{v * 1000:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
