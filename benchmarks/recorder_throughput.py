"""Recorder throughput: raw frames per second through the recorder's logic, and dissection time.

Frames per second through `Sessions.on_frames` (frames checked, the ring fed, and with a capture open
each frame encoded and written to a file), for pcapng and pcap, on 64-byte SYN frames and ~300-byte DNS
answers, in batches of 256. Baseline in the same run: decoding the same FrameBatch from msgpack (work
the actor does for every batch anyway). Then the wall time of one dissection (the child process with
tshark) of a 10,000-packet capture (the default file limit).

    .venv/bin/python benchmarks/recorder_throughput.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floodwatch import messages
from floodwatch.messages import FrameBatch
from floodwatch.recorder.jobs import DissectJob, JobSpec
from floodwatch.recorder.sessions import Sessions
from floodwatch.settings.recorder import RecorderSettings
from tests.recorder.recorder_packets import SYN_OPTS, dns_amp_frame, ip4, tcp

BATCH = 256


def batch_bytes(kind: str) -> bytes:
    make = dns_amp_frame if kind == "dns" else (lambda i: ip4(6, tcp(1024 + i, 80, 0x02, SYN_OPTS)))
    frames = [[1.7e9 + i * 1e-5, len(make(i)), make(i)] for i in range(BATCH)]
    return messages.encode(FrameBatch(iface="eth0", linktype=1, sample_rate=1, frames=frames))


def rate(data: bytes, mode: str, seconds: float, tmp: Path) -> float:
    """Frames per second for one mode: decode only, ring only, or decode + ring + an open capture."""
    settings = replace(RecorderSettings(), output_dir=str(tmp), min_free_bytes=0, max_packets=10**9,
                       max_seconds=1e9, max_file_bytes=10**12, max_total_bytes=0,
                       format=mode.split("-")[-1] if mode.startswith("write") else "pcapng")
    sess = Sessions(settings, tmp)
    if mode.startswith("write"):
        sess.on_opened("bench", "")
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        msg = messages.decode(data)
        if mode != "decode":
            assert isinstance(msg, FrameBatch)
            sess.on_frames(msg.frames, msg.linktype, msg.sample_rate)
        n += BATCH
    elapsed = time.perf_counter() - start
    sess.on_stream_ended()
    for p in tmp.iterdir():
        p.unlink()
    return n / elapsed


def dissect_seconds(tmp: Path) -> float:
    settings = replace(RecorderSettings(), output_dir=str(tmp), min_free_bytes=0, ring_packets=0)
    sess = Sessions(settings, tmp)
    sess.on_opened("dissect", "dns_amplification")
    msg = messages.decode(batch_bytes("dns"))
    assert isinstance(msg, FrameBatch)
    saved: list[Any] = []
    while not saved:  # until the default 10,000-packet limit closes the file
        saved = sess.on_frames(msg.frames, 1, 1)
    path = saved[0].capture.path
    job = DissectJob(JobSpec("dissect", path, path.replace(".pcapng", ".findings.json"), "dns_amplification"),
                     "tshark", 300.0, 2048)
    start = time.perf_counter()
    job.start()
    while (res := job.poll()) is None:
        time.sleep(0.01)
    assert res.ok, res.error
    elapsed = time.perf_counter() - start
    for p in tmp.iterdir():
        p.unlink()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fw-recorder-bench-") as d:
        tmp = Path(d)
        for kind in ("syn", "dns"):
            data = batch_bytes(kind)
            for mode in ("decode", "ring", "write-pcapng", "write-pcap"):
                runs = [rate(data, mode, args.seconds, tmp) for _ in range(args.runs)]
                print(f"{kind:4} {mode:13} median {statistics.median(runs):>12,.0f} frames/s  "
                      f"(runs: {', '.join(f'{r:,.0f}' for r in runs)})")
        runs = [dissect_seconds(tmp) for _ in range(args.runs)]
        print(f"dissection of 10,000 DNS answers: median {statistics.median(runs):.2f} s "
              f"(runs: {', '.join(f'{r:.2f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
