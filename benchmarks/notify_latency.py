"""Latency from an incident reaching the server to its message reaching the receiver (loopback).

Real parts: `floodwatch server` as a process (SQLite, synchronous=FULL) with a webhook channel and an
email channel, the test suite's aiohttp receiver (signature checked) and aiosmtpd (STARTTLS + AUTH).
For each incident the benchmark POSTs an open through the agent API and waits for the webhook and the
mail to arrive; latency = arrival - the moment the POST was sent. Baseline in the same run: the POST's
own round trip (the server storing the incident and its outbox rows, fsync included).

    .venv/bin/python benchmarks/notify_latency.py --runs 5 --incidents 20
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import eventually
from tests.server.fwserver_util import ServerProc, incident_body
from tests.server.notify_peers import Got
from tests.server.notify_setup import Peers


def nth_webhook(peers: Peers, i: int) -> Got | None:
    got = peers.rx.messages("webhook")
    return got[i] if len(got) > i else None


def nth_mail_at(peers: Peers, i: int) -> float | None:
    return time.time() if len(peers.smtp.mails) > i else None


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run_once(tmp: Path, n: int) -> dict[str, list[float]]:
    peers = Peers(tmp)
    channels = [{**c, "rate_per_minute": 10_000} for c in peers.channels() if c["name"] in ("hook", "mail")]
    srv = ServerProc(tmp, ["--config", str(peers.config(channels))]).start()
    out: dict[str, list[float]] = {"post": [], "webhook": [], "email": []}
    try:
        node = srv.add_node("bench")
        for i in range(n):
            t0 = time.time()
            reply = srv.post("incident", incident_body(), node)
            out["post"].append(time.time() - t0)
            assert reply.status == 201, reply.raw
            got = eventually(functools.partial(nth_webhook, peers, i), 10, interval=0.001)
            mail_at = eventually(functools.partial(nth_mail_at, peers, i), 10, interval=0.001)
            out["webhook"].append(got.at - t0)
            out["email"].append(mail_at - t0)
            time.sleep(0.05)
    finally:
        srv.stop()
        peers.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--incidents", type=int, default=20)
    args = ap.parse_args()
    medians: dict[str, list[float]] = {"post": [], "webhook": [], "email": []}
    allv: dict[str, list[float]] = {"post": [], "webhook": [], "email": []}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="fw-notify-bench-") as d:
            res = run_once(Path(d), args.incidents)
        line = []
        for k, v in res.items():
            medians[k].append(statistics.median(v))
            allv[k] += v
            line.append(f"{k} median {1000 * statistics.median(v):7.2f} ms")
        print(f"run {run + 1}: " + ", ".join(line), flush=True)
    print(f"\n{args.runs} runs x {args.incidents} incidents, loopback, 2 cores; latency from the POST being sent")
    for k, label in (("post", "POST answered (baseline)"), ("webhook", "webhook received"),
                     ("email", "mail received (SMTP)")):
        print(f"{label:<26} median of runs {1000 * statistics.median(medians[k]):7.2f} ms   "
              f"p99 {1000 * pct(allv[k], 99):7.2f} ms   max {1000 * max(allv[k]):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
