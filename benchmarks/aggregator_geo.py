"""Country lookups per second: iptocc (RIR data in its wheel) against maxminddb on a MaxMind DB.

No GeoLite2 file can be downloaded here (it needs a licence key), so a GeoLite2-Country-shaped
database is built with mmdb-writer (`pip install mmdb-writer`, a benchmark-only tool) from random
IPv4 networks; maxminddb's lookup walks at most 128 tree levels whatever the file size, so its speed
on this file is representative. Both sides look up the same random public IPv4 addresses, in the
shape the aggregator uses (a list of address strings per window). Medians of several runs.

    .venv/bin/python benchmarks/aggregator_geo.py [--n 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from floodwatch.aggregate.geo import IptoccLookup, MaxmindLookup

COUNTRIES = ["US", "CN", "DE", "BR", "RU", "IN", "NL", "FR", "GB", "JP", "KR", "VN"]


def build_mmdb(path: Path, networks: int) -> bool:
    try:
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet
    except ImportError:
        return False
    rng = random.Random(1)
    by_cc: dict[str, list[str]] = {}
    for _ in range(networks):
        net = ipaddress.IPv4Network((rng.randrange(1 << 24) << 8, 24))
        by_cc.setdefault(rng.choice(COUNTRIES), []).append(str(net))
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for cc, nets in by_cc.items():
        writer.insert_network(IPSet(nets), {"country": {"iso_code": cc}})
    writer.to_db_file(str(path))
    return True


def rate(fn: Callable[[list[str]], object], ips: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.process_time()
        fn(ips)
        times.append(time.process_time() - t)
    return len(ips) / statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--networks", type=int, default=20_000)
    args = ap.parse_args()
    rng = random.Random(2)
    ips = [str(ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))) for _ in range(args.n)]
    ipt = IptoccLookup()
    print(f"iptocc    : {rate(ipt.countries, ips, args.runs) / 1e6:.2f} M lookups/CPU-s (batched list call)")
    print(f"iptocc 1x1: {rate(lambda xs: [ipt.countries([x]) for x in xs], ips[:50_000], args.runs) / 1e6:.2f}"
          " M lookups/CPU-s (one address per call)")
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "country.mmdb"
        t = time.monotonic()
        if not build_mmdb(db, args.networks):
            print("maxminddb : not measured (mmdb-writer is not installed to build a test database)")
            return 0
        print(f"(built a {db.stat().st_size // 1024} KiB MMDB with {args.networks} networks "
              f"in {time.monotonic() - t:.1f} s)")
        mm = MaxmindLookup(str(db))
        per_s = rate(mm.countries, ips, args.runs)
        print(f"maxminddb : {per_s / 1e6:.2f} M lookups/CPU-s (MODE_AUTO: the C extension)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
