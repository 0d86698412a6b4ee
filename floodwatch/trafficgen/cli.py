"""`floodwatch traffic`: generate attack or benign traffic as pcap files or live frames.

    floodwatch traffic list
    floodwatch traffic gen VECTOR --out FILE [--pps N] [--duration S | --count N] [--ipv6] ...
    floodwatch traffic send VECTOR --iface IF --pps N --duration S [--ipv6] [--dst-mac MAC] ...

`send` needs CAP_NET_RAW and is meant for a test network namespace (`ip netns exec NS floodwatch ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.send import send
from floodwatch.trafficgen.vectors import VECTORS, VectorSpec, frames_for

DEFAULT_START = 1_700_000_000.0  # pcap timestamps start here unless --start is given


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("traffic", help="generate attack/benign traffic (pcap files or live frames)")
    sub = p.add_subparsers(dest="traffic_cmd", required=True)
    lst = sub.add_parser("list", help="list the vectors")
    lst.set_defaults(func=run_list)
    gen = sub.add_parser("gen", help="write a vector to a pcap file")
    _common(gen)
    gen.add_argument("--out", required=True, help="pcap file to write")
    gen.add_argument("--pps", type=float, default=10_000.0, help="packet rate of the timestamps (default 10000)")
    gen.add_argument("--duration", type=float, default=None, help="seconds of traffic (default 1)")
    gen.add_argument("--count", type=int, default=None, help="number of packets (instead of --duration)")
    gen.add_argument("--start", type=float, default=DEFAULT_START, help="timestamp of the first packet")
    gen.set_defaults(func=run_gen)
    snd = sub.add_parser("send", help="send a vector out of an interface (raw socket; root, test netns)")
    _common(snd)
    snd.add_argument("--iface", required=True, help="interface to send on")
    snd.add_argument("--pps", type=float, required=True, help="packets per second")
    snd.add_argument("--duration", type=float, required=True, help="seconds")
    snd.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff", help="destination MAC (default broadcast)")
    snd.set_defaults(func=run_send)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("vector", choices=VECTORS, metavar="VECTOR", help="attack vector (see `traffic list`)")
    p.add_argument("--ipv6", action="store_true", help="IPv6 instead of IPv4")
    p.add_argument("--dst", default="", help="victim address (default 198.18.0.1 / fd00::1)")
    p.add_argument("--sources", type=int, default=2000, help="distinct source addresses (default 2000)")
    spoof = p.add_mutually_exclusive_group()
    spoof.add_argument("--spoof", dest="spoofed", action="store_true", default=None,
                       help="random spoofed sources with one TTL")
    spoof.add_argument("--no-spoof", dest="spoofed", action="store_false", help="real-looking sources")
    p.add_argument("--ttl", type=int, default=0, help="fixed TTL / hop limit (default: by source kind)")
    p.add_argument("--variety", type=int, default=2048, help="distinct frames to cycle (default 2048)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same frames)")
    p.add_argument("--sport", default="", help="UDP vectors: source port, a number or 'random' (0-65535)")
    p.add_argument("--dport", default="", help="UDP vectors: destination port, a number or 'random'")
    p.add_argument("--dst-spread", type=int, default=0, metavar="N",
                   help="random destinations in the victim's /N (default: the victim alone)")


def spec_of(args: argparse.Namespace, dst_mac: bytes = b"\xff" * 6) -> VectorSpec:
    if not 0 <= args.ttl <= 255:
        raise ValueError("--ttl must be 0-255")
    if args.sources < 1 or args.variety < 1:
        raise ValueError("--sources and --variety must be at least 1")
    return VectorSpec(args.vector, args.ipv6, args.dst, args.sources, args.spoofed, args.ttl, args.variety,
                      args.seed, dst_mac, args.sport, args.dport, args.dst_spread)


def run_list(args: argparse.Namespace) -> int:
    for v in VECTORS:
        print(v)
    return 0


def run_gen(args: argparse.Namespace) -> int:
    try:
        spec = spec_of(args)
        if args.pps <= 0:
            raise ValueError("--pps must be positive")
        count = args.count if args.count is not None else int(args.pps * (args.duration or 1.0))
        if count < 1:
            raise ValueError("nothing to write: --count/--duration gives no packet")
        pool = frames_for(spec)
        n = write_pcap(args.out, paced(pool, args.pps, count, args.start))
    except (ValueError, OSError) as e:
        print(f"floodwatch traffic gen: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "vector": spec.vector, "ipv6": spec.v6, "packets": n, "pps": args.pps}))
    return 0


def run_send(args: argparse.Namespace) -> int:
    try:
        mac = bytes.fromhex(args.dst_mac.replace(":", ""))
        if len(mac) != 6:
            raise ValueError(f"--dst-mac {args.dst_mac!r} is not a MAC address")
        pool = frames_for(spec_of(args, mac))
        report = send(args.iface, pool, args.pps, args.duration)
    except (ValueError, OSError) as e:
        print(f"floodwatch traffic send: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"vector": args.vector, "iface": args.iface, "sent": report.sent, "errors": report.errors,
                      "seconds": round(report.seconds, 3), "first_ts": report.first_ts,
                      "achieved_pps": round(report.achieved_pps)}), flush=True)
    return 0
