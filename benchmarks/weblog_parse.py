"""nginx combined log lines per CPU-second through the weblog actor's core (parse + window), as the
actor runs it: chunks of `read_bytes` (4 MiB) of complete lines, parsed and added to a window.

Scenarios (--lines lines each):
  site      a realistic mix: 2,000 clients, 500 paths (20 % with a query string), 60 user agents,
            statuses 200/304/404, varying byte counts and timestamps
  flood     one client, one path, one agent (an h2load flood as nginx logs it)
  random    worst case: every client, path, query and agent distinct (Python work per line)
Baseline in the same run: the naive way, one `re.match` per line in a Python loop, collecting the
same fields into Counters (site scenario). Medians of --runs runs.

    .venv/bin/python benchmarks/weblog_parse.py [--lines 500000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections import Counter

from floodwatch.settings.weblog import WeblogSettings
from floodwatch.weblog.parse import parse_combined
from floodwatch.weblog.window import WindowBuilder

AGENTS = [f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0 Safari/537.36"
          for v in range(60, 120)]


def lines(kind: str, n: int) -> bytes:
    rng = random.Random(21)
    out = []
    for i in range(n):
        if kind == "flood":
            ip, path, ua, st, size = "198.51.100.7", "/", "h2load nghttp2/1.52.0", 200, 612
        elif kind == "random":
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            path, ua = f"/{rng.getrandbits(48):x}?{rng.getrandbits(32)}", f"bot/{rng.getrandbits(40)}"
            st, size = 200, rng.randrange(100, 90000)
        else:
            ip = f"203.0.{rng.randrange(8)}.{rng.randrange(250)}"
            path = f"/shop/item/{rng.randrange(500)}" + (f"?page={rng.randrange(20)}" if rng.random() < 0.2 else "")
            ua, st, size = rng.choice(AGENTS), rng.choice((200, 200, 200, 304, 404)), rng.randrange(100, 90000)
        ts = f"30/Nov/2026:19:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d} +0000"
        out.append(f'{ip} - - [{ts}] "GET {path} HTTP/1.1" {st} {size} "https://shop.example/" "{ua}"\n')
    return "".join(out).encode()


def chunks(data: bytes, size: int) -> list[bytes]:
    out, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size) + 1 or len(data)
        out.append(data[start:end])
        start = end
    return out


def ours(parts: list[bytes]) -> float:
    wb = WindowBuilder(WeblogSettings(), 0.0)
    t = time.process_time()
    for c in parts:
        wb.add(parse_combined(c), b"shop")
    w = wb.flush(1.0)
    assert w.malformed == 0
    return time.process_time() - t


LINE = re.compile(rb'(\S+) \S+ \S+ \[[^\]]*\] "(\S+) ([^ ?"]*)(\?[^ "]*)?[^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"')


def naive(parts: list[bytes]) -> float:
    fields: list[Counter[bytes]] = [Counter() for _ in range(6)]
    t = time.process_time()
    for c in parts:
        for line in c.splitlines():
            m = LINE.match(line)
            if m:
                for acc, v in zip(fields, m.groups(), strict=True):
                    acc[v or b""] += 1
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    size = WeblogSettings().read_bytes
    print(f"{args.lines} lines per run, chunks of {size >> 20} MiB, median of {args.runs} runs (lines per CPU-second)")
    print("| scenario | ours | naive line-by-line regex (same run) |")
    print("| --- | --- | --- |")
    for kind in ("site", "flood", "random"):
        parts = chunks(lines(kind, args.lines), size)
        mine = statistics.median(ours(parts) for _ in range(args.runs))
        base = statistics.median(naive(parts) for _ in range(args.runs)) if kind == "site" else None
        print(f"| {kind} | {args.lines / mine:,.0f} | {f'{args.lines / base:,.0f}' if base else '-'} |")


if __name__ == "__main__":
    main()
