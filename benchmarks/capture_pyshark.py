"""What rate the `pyshark` source holds live: trafgen sends at fixed rates across a veth pair, the capture
actor (source = "pyshark") runs in the receiving namespace; reports the share of packets that became
records at each rate, and its CPU.

    sudo .venv/bin/python benchmarks/capture_pyshark.py [--rates 1000,2000,5000,10000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq

from benchmarks.capture_live import cpu_of
from floodwatch import messages
from floodwatch.messages import PacketBatch
from tests.capture.capture_support import eth_to, ipv4, trafgen_conf, udp
from tests.helpers import (
    BusHarness,
    base_config,
    exit_on_sigterm,
    ipc_endpoints,
    netns_pair,
    start_actor,
    stop_process,
    write_config,
)


def count_records(sink: zmq.Socket, dport: int, settle: float = 2.0) -> tuple[int, float]:
    """Records to dport until none came for `settle` seconds -> (count, time of the last one)."""
    n, quiet_since = 0, time.monotonic()
    while time.monotonic() - quiet_since < settle:
        if sink.poll(100):
            msg = messages.decode(sink.recv())
            if isinstance(msg, PacketBatch):
                import numpy as np

                from floodwatch.records import RECORD_DTYPE

                r = np.frombuffer(msg.records, dtype=RECORD_DTYPE)
                n += int(np.count_nonzero(r["dport"] == dport))
                quiet_since = time.monotonic()
    return n, quiet_since


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,5000,10000,20000")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    busdir = Path(tempfile.mkdtemp(prefix="fwcapp"))
    try:
        with netns_pair("fwcapp") as pair, tempfile.TemporaryDirectory() as d, \
                BusHarness(ipc_endpoints(busdir)) as harness:
            tmp = Path(d)
            sink = harness.ctx.socket(zmq.PULL)
            sink.setsockopt(zmq.LINGER, 0)
            sink.bind(harness.endpoints.packets)
            cfg = base_config(tmp, harness.endpoints, capture={"source": "pyshark", "interfaces": [pair.if_b]})
            proc = start_actor("capture", write_config(tmp / "c.toml", cfg), tmp / "c.log", netns=pair.ns_b)
            try:
                harness.wait_ready("capture")
                e = lambda p: eth_to(pair.mac_b, pair.mac_a, p)  # noqa: E731
                warm = tmp / "warm.cfg"
                warm.write_text(trafgen_conf([e(ipv4(pair.ip4_a, pair.ip4_b, 17, udp(1, 9, b"w")))]))
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # until tshark runs
                    pair.run(pair.ns_a, ["trafgen", "--dev", pair.if_a, "--conf", str(warm), "-n", "5", "-q"])
                    if count_records(sink, 9, settle=0.5)[0]:
                        break
                for i, rate in enumerate(int(r) for r in args.rates.split(",")):
                    port = 10000 + i
                    conf = tmp / "rate.cfg"
                    conf.write_text(trafgen_conf([e(ipv4(pair.ip4_a, pair.ip4_b, 17, udp(1, port, b"x" * 40)))]))
                    n = int(rate * args.seconds)
                    cpu0 = cpu_of(proc.pid)
                    t0 = time.monotonic()
                    pair.run(pair.ns_a, ["trafgen", "--dev", pair.if_a, "--conf", str(conf), "-n", str(n), "-q",
                                         "--cpus", "1", "-t", f"{int(1e6 / rate)}us"], timeout=600)
                    got, last = count_records(sink, port)
                    cpu = cpu_of(proc.pid) - cpu0
                    print(f"{rate:>7,} pps offered for {args.seconds:g} s: {got / n:6.1%} of {n:,} captured, the last "
                          f"{last - t0:5.1f} s after the start -> {got / max(last - t0, args.seconds):,.0f} pps held; "
                          f"capture actor CPU {cpu:.2f} s (tshark's not counted)", flush=True)
            finally:
                stop_process(proc)
                sink.close(0)
    finally:
        shutil.rmtree(busdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
