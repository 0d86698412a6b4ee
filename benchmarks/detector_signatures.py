"""Signature matching cost: SignatureMatcher.count (one Aho-Corasick pass) against a naive scan of every
pattern over every payload, on the same records, with the built-ins plus N IOC patterns.

    .venv/bin/python benchmarks/detector_signatures.py [--records 512] [--iocs 0,100,1000,10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodwatch.records import RECORD_DTYPE
from floodwatch.signatures import SignatureMatcher


def sample(n: int, seed: int = 7) -> np.ndarray:
    """A realistic mix: random payloads, DNS responses, HTTP requests, memcached, one IOC hit in 50."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["proto"], r["ipver"] = 17, 4
    r["sport"] = rng.integers(1024, 65535, n)
    r["dport"] = rng.integers(1, 65535, n)
    r["paylen"] = 32
    heads = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    r["payload"] = heads.view("S32").reshape(-1)
    for i in range(0, n, 4):
        r[i]["sport"], r[i]["payload"] = 53, b"\x12\x34\x81\x80\x00\x01\x00\x08\x00\x00"
    for i in range(1, n, 4):
        r[i]["proto"], r[i]["dport"], r[i]["payload"] = 6, 80, b"GET /index.html HTTP/1.1\r\nHost: a"
    for i in range(2, n, 50):
        r[i]["payload"] = b"xxxxioc-pattern-00042-xxxx"
    return r


def naive(records: np.ndarray, patterns: list[bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for rec in records:
        head = bytes(rec["payload"])[: int(rec["paylen"])]
        for p in patterns:
            if p in head:
                out[p] = out.get(p, 0) + 1
    return out


def timed(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--iocs", default="0,100,1000,10000")
    args = ap.parse_args()
    recs = sample(args.records)
    print(f"| IOC patterns | SignatureMatcher.count, {args.records} records | naive scan (same patterns) | ratio |")
    print("| --- | --- | --- | --- |")
    for n in (int(x) for x in args.iocs.split(",")):
        iocs = [f"ioc-pattern-{i:05d}" for i in range(n)]
        m = SignatureMatcher.with_iocs(iocs)
        patterns = [p for s in m.content for p in s.patterns]
        fast = timed(lambda m=m: m.count(recs))
        slow = timed(lambda patterns=patterns: naive(recs, patterns), repeat=1 if n >= 1000 else 3)
        print(f"| {n} | {fast * 1000:.2f} ms ({fast / len(recs) * 1e6:.2f} us/record) | "
              f"{slow * 1000:.1f} ms | {slow / fast:.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
