"""How soon live capture reads (the timings of floodwatch/capture/readpolicy.py on a real ring).

trafgen in namespace A, the capture actor in B (as tests/capture/test_capture_live.py runs it). Per run:
  silent    counter_interval 0.05 s, quiet_interval 1 s: counter samples in 3 s of silence (60 without
            the quiet mode); seconds from the first packet of 1,000 packets/s to the first counters that
            show it; counter samples in the 1.2 s of that traffic
  trickle   counter_interval 0.1 s, 50 packets/s: counter samples and batches in 1.5 s of lazy reading;
            then a 20,000 packets/s flood: seconds to its first full batch, batches in its 0.3-0.6 s
  between   counter_interval 1 s, ring blocks after 100 ms, 50 packets/s; a flood 0.25 s after a
            reading (the peek taken by a trickle block): seconds from the reading to the first full
            batch (the half-way check: about 0.5; the next reading: 1.0)
Medians over --runs.

    sudo .venv/bin/python benchmarks/capture_reading.py [--runs 5] [--scenarios silent,trickle,between]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodwatch import messages
from floodwatch.messages import CounterSample, PacketBatch
from tests.capture.test_capture_live import Collector, frames_mix, start_capture, start_trafgen
from tests.helpers import BusHarness, NetnsPair, exit_on_sigterm, ipc_endpoints, netns_pair, stop_process

Arrivals = list[tuple[float, Any]]


@contextmanager
def capture(pair: NetnsPair, tmp: Path, **settings: Any) -> Iterator[Callable[..., None]]:
    """The capture actor in B with `settings`; yields collect(until, seconds, into)."""
    busdir = Path(tempfile.mkdtemp(prefix="fwrdb"))
    try:
        with BusHarness(ipc_endpoints(busdir)) as harness:
            coll = Collector(harness.ctx, harness.endpoints.packets)
            proc = start_capture(pair, harness, tmp, **settings)

            def collect(until: Callable[[], bool], seconds: float, into: Arrivals) -> None:
                deadline = time.monotonic() + seconds
                while not until() and (left := deadline - time.monotonic()) > 0:
                    if coll.sock.poll(max(1, int(left * 1000))):
                        into.append((time.monotonic(), messages.decode(coll.sock.recv())))

            try:
                coll.wait_counters(lambda c: True)
                yield collect
            finally:
                stop_process(proc)
                coll.close()
    finally:
        shutil.rmtree(busdir, ignore_errors=True)


def samples(arrivals: Arrivals) -> list[float]:
    return [t for t, m in arrivals if isinstance(m, CounterSample)]


def full_batches(arrivals: Arrivals, after: float = 0.0) -> list[float]:
    return [t for t, m in arrivals if isinstance(m, PacketBatch) and m.count >= 64 and t > after]


def silent(pair: NetnsPair, tmp: Path) -> dict[str, float]:
    with capture(pair, tmp, quiet_interval=1.0) as collect:
        quiet: Arrivals = []
        for _ in range(3):  # the namespace's own start-up chatter (IPv6 DAD, ...) dies down
            quiet.clear()
            collect(lambda: False, 3.0, quiet)
            if len(samples(quiet)) <= 6:
                break
        base = [m for _, m in quiet if isinstance(m, CounterSample)][-1]
        busy: Arrivals = []
        t0 = time.monotonic()
        sender = start_trafgen(pair, tmp, 1500, 1000, frames_mix(pair)["udp"])
        try:
            collect(lambda: False, 1.2, busy)
        finally:
            sender.wait(30)
        moved = [t for t, m in busy if isinstance(m, CounterSample) and m.rx_packets > base.rx_packets]
        return {"quiet_samples_3s": len(samples(quiet)), "first_counters_s": moved[0] - t0 if moved else 99.0,
                "busy_samples_1.2s": len(moved)}


def trickle(pair: NetnsPair, tmp: Path) -> dict[str, float]:
    with capture(pair, tmp, counter_interval=0.1, lazy_pps=2000) as collect:
        udp = frames_mix(pair)["udp"]
        arrivals: Arrivals = []
        sender = start_trafgen(pair, tmp, 150, 20_000, udp)  # 50 packets/s for 3 s
        try:
            collect(lambda: False, 1.0, arrivals)  # the first readings find the trickle; then lazy
            arrivals.clear()
            collect(lambda: False, 1.5, arrivals)
        finally:
            sender.wait(30)
        batches = [m for _, m in arrivals if isinstance(m, PacketBatch) and m.count]
        out: dict[str, float] = {"lazy_samples_1.5s": len(samples(arrivals)), "lazy_batches_1.5s": len(batches)}
        arrivals.clear()
        t0 = time.monotonic()
        flood = start_trafgen(pair, tmp, 10_000, 50, udp)  # 20,000 packets/s
        try:
            collect(lambda: False, 0.6, arrivals)
        finally:
            flood.wait(30)
        big = full_batches(arrivals)
        out["flood_first_batch_s"] = big[0] - t0 if big else 99.0
        out["flood_batches_0.3-0.6s"] = len([t for t, m in arrivals if isinstance(m, PacketBatch) and m.count
                                             and t > t0 + 0.3])
        return out


def between(pair: NetnsPair, tmp: Path) -> dict[str, float]:
    with capture(pair, tmp, counter_interval=1.0, lazy_pps=2000, quiet_interval=1.0,
                 ring_block_timeout_ms=100) as collect:
        udp = frames_mix(pair)["udp"]
        arrivals: Arrivals = []
        sender = start_trafgen(pair, tmp, 500, 20_000, udp)  # 50 packets/s for 10 s
        try:
            collect(lambda: len(samples(arrivals)) >= 3, 10, arrivals)
            arrivals.clear()
            collect(lambda: len(samples(arrivals)) >= 1, 3, arrivals)  # a reading (T) ...
            t_reading = arrivals[-1][0]
            collect(lambda: False, 0.25, arrivals)  # ... and its peek, taken by a trickle block
            flood = start_trafgen(pair, tmp, 50_000, 10, udp)
            try:
                collect(lambda: bool(full_batches(arrivals)), 2, arrivals)
            finally:
                flood.wait(30)
        finally:
            sender.kill()
            sender.wait(10)
        big = full_batches(arrivals)
        return {"flood_after_reading_s": big[0] - t_reading if big else 99.0}


SCENARIOS: dict[str, Callable[[NetnsPair, Path], dict[str, float]]] = {
    "silent": silent, "trickle": trickle, "between": between}


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scenarios", default="silent,trickle,between")
    args = ap.parse_args()
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fwrdbench") as d:
        tmp = Path(d)
        for i in range(args.runs):
            with netns_pair("fwrdb") as pair:
                run = {k: v for scenario in scenarios for k, v in scenario(pair, tmp).items()}
            runs.append(run)
            print(f"run {i + 1}: {run}", file=sys.stderr)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.3f} (runs: {', '.join(f'{v:.3g}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
