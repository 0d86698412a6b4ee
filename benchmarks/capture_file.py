"""File throughput: the capture side of `floodwatch analyze` (read + parse + batch + encode), the whole
`floodwatch analyze --json`, and beside them in the same run `tshark -T fields` and pyshark on the same file.

    .venv/bin/python benchmarks/capture_file.py [--runs 3] [--file F.pcap] [--pyshark-packets 20000]

Without --file it builds a 1,000,000-packet pcap from the shared captures (../shared/pcaps) in /tmp.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodwatch import messages
from floodwatch.capture.output import Output
from floodwatch.capture.sources import PcapSource
from floodwatch.config import config_from_dict
from floodwatch.messages import Message

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "pcaps"


def build_file(path: Path, packets: int) -> Path:
    from tests.capture.capture_support import frames_of, write_pcap

    frames = [f for p in sorted(glob.glob(str(SHARED / "*.pcap*"))) for _, f in frames_of(Path(p))]
    out = [(1.7e9 + i * 1e-5, frames[i % len(frames)]) for i in range(packets)]
    return write_pcap(path, 1, out)


def capture_side(path: Path) -> tuple[int, float]:
    """Packets and CPU seconds for reading, parsing, batching and encoding the whole file."""
    s = config_from_dict({"capture": {"source": "pcap", "pcap_file": str(path)}}).capture
    sent = [0]

    def send(msg: Message, channel: str) -> bool:
        sent[0] += len(messages.encode(msg))
        return True

    t0 = time.process_time()
    src = PcapSource(s)
    out = Output("pcap", src.ifaces, s.batch_records, s.batch_interval, s.frames_per_second, s.frames_batch,
                 s.snaplen, send, time.monotonic)
    while not src.finished:
        src.pump(out)
    out.flush_all()
    cpu = time.process_time() - t0
    src.close()
    return src.packets, cpu


def wall(argv: list[str], **kw: object) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.monotonic() - t0


def pyshark_rate(path: Path, n: int) -> float:
    import pyshark

    cap = pyshark.FileCapture(str(path), keep_packets=False)
    t0 = time.monotonic()
    seen = 0
    for pkt in cap:
        _ = pkt.highest_layer
        seen += 1
        if seen >= n:
            break
    dt = time.monotonic() - t0
    cap.close()
    return seen / dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file", default="")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--pyshark-packets", type=int, default=20_000)
    args = ap.parse_args()
    path = Path(args.file) if args.file else Path("/tmp/fwcap_bench_1m.pcap")
    if not path.exists():
        build_file(path, args.packets)
    n = 0
    cap, analyze, tshark, pysh = [], [], [], []
    env = dict(os.environ)
    for _ in range(args.runs):
        n, cpu = capture_side(path)
        cap.append(n / cpu)
        analyze.append(n / wall([sys.executable, "-m", "floodwatch.cli", "analyze", str(path), "--json"], cwd=REPO,
                                env=env))
        tshark.append(n / wall(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "ip.src", "-e", "ip.proto",
                                "-e", "frame.len"]))
        pysh.append(pyshark_rate(path, args.pyshark_packets))
    med = statistics.median
    print(f"file {path} ({n:,} packets), medians of {args.runs} runs")
    print(f"capture side (read+parse+batch+encode): {med(cap):,.0f} packets per CPU-s")
    print(f"floodwatch analyze --json (whole run, wall): {med(analyze):,.0f} packets/s")
    print(f"tshark -T fields (wall): {med(tshark):,.0f} packets/s")
    print(f"pyshark FileCapture (first {args.pyshark_packets:,}, wall): {med(pysh):,.0f} packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
