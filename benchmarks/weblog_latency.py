"""Latency from the start of an HTTP flood to its http_flood incident at the embedded server, live.

Real parts: nginx in namespace B (HTTP/1.1 on 80, HTTPS with HTTP/2 on 443, self-signed certificate)
writing its access log; the whole agent (supervisor, every actor, weblog on, the embedded server) in B
on its defaults except a shorter resolution (`[weblog.detect] hold_down = 1`, `cooldown = 0.5`) so runs
follow each other quickly; h2load in namespace A (40 connections; HTTP/2: 10 streams each).
Latency = the server's `created_at` of the incident - the moment h2load was started. Baseline in the
same run: h2load start -> the first flood line in the access log (the floor of any log-based detector,
polled every 5 ms). Medians of --runs runs per protocol.

    sudo .venv/bin/python benchmarks/weblog_latency.py --runs 5 [--seconds 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import eventually, exit_on_sigterm, netns_pair
from tests.weblog.weblog_live import WEB_SUBTYPES, flood_report, h2load, nginx, running_agent


def web_incidents(db: Path) -> list[tuple[str, float, str]]:
    """(key, created_at, status) of the stored http_flood incidents the weblog opened."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("SELECT incident_key, created_at, status, attack_subtype FROM incidents "
                               "WHERE attack_family = 'http_flood' ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    return [(k, float(c), s) for k, c, s, sub in rows if sub in WEB_SUBTYPES]


def stored(db: Path, known: set[str]) -> tuple[str, float, str] | None:
    new = [row for row in web_incidents(db) if row[0] not in known]
    return new[0] if new else None


def one_run(pair, agent, log: Path, http2: bool, seconds: float, known: set[str]) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    size = log.stat().st_size
    t0 = time.time()
    proc = h2load(pair, seconds, http2)
    try:
        first = eventually(lambda: log.stat().st_size > size and time.time(), 10, interval=0.005)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"no flood in the log: {proc.communicate()[0][-2000:]}") from None
    db = agent.state / "server.db"
    key, created, _ = eventually(lambda: stored(db, known), 20, interval=0.05)
    report = flood_report(proc)
    known.add(key)
    eventually(lambda: (key, created, "resolved") in web_incidents(db), 30, interval=0.2)
    return created - t0, first - t0, int(report["rps"])


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fwweblat") as tmp_s:
        tmp = Path(tmp_s)
        with netns_pair("fwwbl") as pair, nginx(pair, tmp / "nginx") as log, \
                running_agent(tmp, pair, log, {"hold_down": 1.0, "cooldown": 0.5}) as agent:
            known: set[str] = set()
            print("| protocol | incident at the server (median, all runs) | first log line (baseline) | h2load rps |")
            print("| --- | --- | --- | --- |")
            for http2 in (False, True):
                runs = [one_run(pair, agent, log, http2, args.seconds, known) for _ in range(args.runs)]
                lat = [r[0] * 1000 for r in runs]
                base = [r[1] * 1000 for r in runs]
                name = "HTTPS, HTTP/2 (-m 10)" if http2 else "HTTP/1.1 keep-alive"
                print(f"| {name} | median {statistics.median(lat):.0f} ms (all: {', '.join(f'{v:.0f}' for v in lat)}) "
                      f"| median {statistics.median(base):.0f} ms | {statistics.median(r[2] for r in runs):,.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
