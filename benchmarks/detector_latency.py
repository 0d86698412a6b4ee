"""Detection latency, live in network namespaces: first flood packet -> incident.opened on the bus.

The generator (`floodwatch traffic send`, raw socket in namespace A) stamps the wall time of its first
frame; capture, aggregator and detector run as real processes in namespace B; this process receives
incident.opened through the event proxy and stamps its arrival. Same host, same clock.

Per run it also splits the latency: `window` = opened.updated_at (the packet-time end of the window
that opened the incident) - first frame, and `pipeline` = arrival - that window end (lateness, bus and
processing). The pipeline part is the baseline the detector logic adds nothing to.

    sudo .venv/bin/python benchmarks/detector_latency.py [--runs 5] [--threshold 2000] [--out FILE]
        [--background-pps N]

`--background-pps N` keeps N small UDP packets per second flowing for the whole benchmark (a real host
is never silent; the capture then reads its ring lazily, ten times a second, until the flood starts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.detect.detect_live import live_pipeline, sender_report  # noqa: E402
from tests.helpers import exit_on_sigterm, netns_pair  # noqa: E402

VECTORS = ("udp_flood", "syn_flood", "dns_amplification", "ack_flood", "icmp_flood")
LEVELS = {"100x": 100.0, "10x": 10.0, "5.5x": 5.5, "3x": 3.0, "1.6x": 1.6}


def one_run(live: Any, vector: str, pps: float, seconds: float) -> dict[str, float]:
    sender = live.send(vector, pps, seconds)
    opened, arrival = live.opened(timeout=seconds + 15)
    report = sender_report(sender)
    live.resolved(timeout=30)
    first = float(report["first_ts"])
    return {"latency": arrival - first, "window": opened.updated_at - first, "pipeline": arrival - opened.updated_at,
            "achieved_pps": float(report["achieved_pps"]), "subtype_ok": float(opened.attack_subtype == vector)}


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (f"median {statistics.median(ms):.0f} ms, min {ms[0]:.0f}, max {ms[-1]:.0f} "
            f"(all: {', '.join(f'{v:.0f}' for v in ms)})")


def main() -> int:
    exit_on_sigterm()  # a killed run still removes its namespaces and stops its processes
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threshold", type=int, default=2000)
    ap.add_argument("--vectors", default=",".join(VECTORS))
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--out", default="")
    ap.add_argument("--lateness", type=float, default=None, help="aggregator lateness (s; default: the config default)")
    ap.add_argument("--window", type=float, default=0.1, help="aggregator window (s)")
    ap.add_argument("--background-pps", type=float, default=0.0, help="background traffic during the runs")
    args = ap.parse_args()
    settings = {"pps_threshold": args.threshold, "dynamic": False, "hold_down": 0.5, "cooldown": 0.3}
    lines = [f"threshold {args.threshold} pps, {args.runs} runs per cell, aggregator lateness {args.lateness} s, "
             f"window {args.window} s, background {args.background_pps:g} pps", ""]
    with tempfile.TemporaryDirectory(prefix="fwdetbench") as tmp, netns_pair("fwdbn") as pair, \
            live_pipeline(pair, Path(tmp), settings, args.lateness, args.window) as live:
        background = live.send("udp_flood", args.background_pps, 24 * 3600, sources="20") \
            if args.background_pps > 0 else None
        time.sleep(1.0)
        for level in args.levels.split(","):
            for vector in args.vectors.split(","):
                pps = LEVELS[level] * args.threshold
                seconds = 1.5 if LEVELS[level] >= 5 else 3.0
                runs = [one_run(live, vector, pps, seconds) for _ in range(args.runs)]
                named = sum(r["subtype_ok"] for r in runs)
                line = (f"| {level} | {vector} | {summary([r['latency'] for r in runs])} | "
                        f"window {statistics.median(r['window'] for r in runs) * 1000:.0f} ms, pipeline "
                        f"{statistics.median(r['pipeline'] for r in runs) * 1000:.0f} ms | "
                        f"{statistics.median(r['achieved_pps'] for r in runs):.0f} pps | {named:.0f}/{len(runs)} |")
                print(line, flush=True)
                lines.append(line)
        if background is not None:
            background.kill()
            background.wait()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
