"""Bus throughput between two processes over ipc: packet summaries per second, batched.

A producer process PUSHes PacketBatch messages (`--batch` records of floodwatch.records each) through the
real codec; a consumer process PULLs, decodes and views the records with numpy, as the aggregator does.
Baseline in the same run: the same bytes over the same sockets without the codec.

    .venv/bin/python benchmarks/bus_throughput.py --runs 5 --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import zmq

from floodwatch import messages
from floodwatch.records import RECORD_DTYPE


def producer(endpoint: str, batch: int, seconds: float, raw: bool) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.connect(endpoint)
    records = np.zeros(batch, dtype=RECORD_DTYPE)
    records["ts"] = time.time()
    records["wirelen"] = 64
    records["proto"] = 17
    blob = records.tobytes()
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        if raw:
            s.send(blob, copy=False)
        else:
            msg = messages.PacketBatch("afpacket", "eth0", seq, 1, batch, blob, 0.0, 0.0)
            s.send(messages.encode(msg), copy=False)
        seq += 1
    s.send(b"END")
    s.close(linger=-1)
    ctx.term()


def consumer(endpoint: str, raw: bool, out: mp.Queue) -> None:  # type: ignore[type-arg]
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.bind(endpoint)
    n = 0
    t0 = None
    cpu0 = time.process_time()
    while True:
        data = s.recv(copy=True)
        if t0 is None:
            t0 = time.monotonic()
        if data == b"END":
            break
        if raw:
            n += len(np.frombuffer(data, dtype=RECORD_DTYPE))
        else:
            msg = messages.decode(data)
            n += len(np.frombuffer(msg.records, dtype=RECORD_DTYPE))  # type: ignore[attr-defined]
    elapsed = time.monotonic() - (t0 or time.monotonic())
    out.put((n, elapsed, time.process_time() - cpu0))
    s.close(0)
    ctx.term()


def one_run(batch: int, seconds: float, raw: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        endpoint = f"ipc://{d}/bench.sock"
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        c = mp.Process(target=consumer, args=(endpoint, raw, q))
        c.start()
        time.sleep(0.2)  # benchmark set-up only: let the consumer bind
        p = mp.Process(target=producer, args=(endpoint, batch, seconds, raw))
        p.start()
        p.join()
        n, elapsed, cpu = q.get(timeout=60)
        c.join()
        return n / elapsed, n / max(cpu, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=1000)
    a = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"raw bytes (baseline)": [], "PacketBatch codec": []}
    for _ in range(a.runs):
        results["raw bytes (baseline)"].append(one_run(a.batch, a.seconds, True))
        results["PacketBatch codec"].append(one_run(a.batch, a.seconds, False))
    print(f"batch={a.batch} records, {a.runs} runs of {a.seconds:g} s, ipc, {os.cpu_count()} cores")
    for name, rs in results.items():
        rate = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs)
        print(f"{name:<22} median {rate / 1e6:6.2f} M summaries/s  (consumer: {cpu / 1e6:6.2f} M per CPU-s)"
              f"  runs: {', '.join(f'{r[0] / 1e6:.2f}' for r in rs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
