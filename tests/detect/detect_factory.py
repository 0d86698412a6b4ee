"""Build TrafficWindows by hand for the detector's pure-logic tests (the aggregator's shape)."""

from __future__ import annotations

import random
from typing import Any

from floodwatch.messages import TrafficWindow, Victim

FLAGS = ("SYN", "SYN-ACK", "ACK", "PSH-ACK", "RST", "RST-ACK", "FIN", "FIN-ACK", "XMAS", "NULL", "SYN-ECE", "OTHER")


def window(t: float, pps: float = 0.0, *, width: float = 0.1, size: int = 100, proto: str = "udp",
           flags: str | None = None, sport: int | None = None, dport: int = 80, ttl: int | None = 64,
           sources: int = 10, victim: str = "198.18.0.1", bidir: int = 0, out_pps: float = 0.0,
           out_size: int = 60, signatures: dict[str, int] | None = None, later_frags: int = 0,
           mix: list[dict[str, Any]] | None = None) -> TrafficWindow:
    """One window of `pps` inbound packets/s of one kind (or a `mix` of such dicts added together)."""
    parts = mix or [dict(pps=pps, size=size, proto=proto, flags=flags, sport=sport, dport=dport, ttl=ttl,
                         sources=sources, victim=victim, bidir=bidir, signatures=signatures or {},
                         later_frags=later_frags)]
    acc: dict[str, Any] = {"packets": 0, "bytes": 0, "proto": {"tcp": 0, "udp": 0, "icmp": 0, "other": 0},
                           "flags": dict.fromkeys(FLAGS, 0), "ttl": {}, "sports": {}, "dports": {},
                           "victims": {}, "bidir": 0, "sigs": {}, "srcs": 0, "later": 0}
    for part in parts:
        _add_part(acc, part, width)
    n_out = int(out_pps * width)
    victims: list[Victim] = [{"ip": ip, "packets": v[0], "bytes": v[1], "proto": v[2], "tcp_flags": v[3],
                "top_src_port": max(v[4], key=lambda r: r["packets"]) if v[4] else None, "src_distinct": acc["srcs"]}
               for ip, v in sorted(acc["victims"].items(), key=lambda kv: -kv[1][0])]
    return TrafficWindow(
        t_start=t, t_end=t + width, exact=False, sample_rate=1.0,
        packets_in=acc["packets"], bytes_in=acc["bytes"], packets_out=n_out, bytes_out=n_out * out_size,
        sampled=acc["packets"] + n_out, proto_in=acc["proto"], proto_out={}, ipver_in={"4": acc["packets"]},
        tcp_flags=acc["flags"], fragments={"first": 0, "later": acc["later"]}, size_hist={},
        ttl_hist=acc["ttl"], src_distinct=acc["srcs"], src_hll=b"",
        top_src_ips=[[f"203.0.113.{i % 250 + 1}", max(1, acc["packets"] // max(acc["srcs"], 1))]
                     for i in range(min(acc["srcs"], 10))],
        top_dst_ips=[[v["ip"], v["packets"], v["bytes"]] for v in victims],
        top_src_ports=[[p, port, n] for (p, port), n in sorted(acc["sports"].items(), key=lambda kv: -kv[1])][:10],
        top_dst_ports=[[p, port, n] for (p, port), n in sorted(acc["dports"].items(), key=lambda kv: -kv[1])][:10],
        victims=victims, signatures=acc["sigs"], bidir_packets=acc["bidir"], malformed=0, kernel_drops=0,
        conn_count=-1,
    )


def _add_part(acc: dict[str, Any], part: dict[str, Any], width: float) -> None:
    n = int(part.get("pps", 0) * width)
    if n <= 0:
        return
    proto = part.get("proto", "udp")
    acc["packets"] += n
    acc["bytes"] += n * int(part.get("size", 100))
    acc["proto"][proto] += n
    if proto == "tcp":
        acc["flags"][part.get("flags") or "SYN"] += n
    if part.get("ttl") is not None:
        acc["ttl"][part["ttl"]] = acc["ttl"].get(part["ttl"], 0) + n
    if proto in ("tcp", "udp"):
        sport = part.get("sport") if part.get("sport") is not None else 40000
        key = (proto, sport)
        acc["sports"][key] = acc["sports"].get(key, 0) + n - part.get("later_frags", 0)
        dkey = (proto, part.get("dport", 80))
        acc["dports"][dkey] = acc["dports"].get(dkey, 0) + n - part.get("later_frags", 0)
    v = acc["victims"].setdefault(part.get("victim", "198.18.0.1"), [0, 0, {}, {}, []])
    v[0] += n
    v[1] += n * int(part.get("size", 100))
    v[2][proto] = v[2].get(proto, 0) + n
    if proto == "tcp":
        flag = part.get("flags") or "SYN"
        v[3][flag] = v[3].get(flag, 0) + n
    if proto in ("tcp", "udp"):
        sport = part.get("sport") if part.get("sport") is not None else 40000
        v[4].append({"proto": proto, "port": sport, "packets": n})
    acc["bidir"] += int(part.get("bidir", 0) * width)
    for k, c in (part.get("signatures") or {}).items():
        acc["sigs"][k] = acc["sigs"].get(k, 0) + int(c * width)
    acc["srcs"] = max(acc["srcs"], int(part.get("sources", 10)))
    acc["later"] += int(part.get("later_frags", 0))


def flood_window(rnd: random.Random, i: int, kind: str) -> TrafficWindow:
    """A sampled window of a flood: ten random source ports (and reflection ports for `kind`), heavy
    sources that come back and random ones, one victim."""
    per = 256
    sports: list[list[Any]] = [["udp", rnd.randint(1024, 65535), per * rnd.randint(1, 3)] for _ in range(10)]
    dports: list[list[Any]] = [["udp", 80, per * 90]]
    if kind == "reflection":
        sports[: 3] = [["udp", 53, per * 40], ["udp", 123, per * 25], ["udp", 1900, per * 5]]
    elif kind == "dns_query":
        dports = [["udp", 53, per * 80], ["udp", rnd.randint(1024, 65535), per]]
    elif kind == "mixed":
        sports[0] = ["tcp", rnd.randint(1024, 65535), per * 30]
        sports[1] = ["icmp", 8, per * 20]
    heavy = [[f"11.0.0.{k}", per * (40 - k)] for k in range(3)]
    srcs = heavy + [[f"11.{rnd.randint(1, 255)}.{rnd.randint(0, 255)}.1", per * (10 - k)] for k in range(7)]
    udp = per * 100
    proto = {"tcp": per * 30 if kind == "mixed" else 0, "udp": udp, "icmp": per * 20 if kind == "mixed" else 0,
             "other": 0}
    total = sum(proto.values())
    return TrafficWindow(
        t_start=1000 + i * 0.1, t_end=1000.1 + i * 0.1, exact=True, sample_rate=float(per), packets_in=total,
        bytes_in=total * 74, packets_out=0, bytes_out=0, sampled=total // per, proto_in=proto,
        proto_out=dict.fromkeys(proto, 0), ipver_in={"4": total, "6": 0}, tcp_flags={"S": proto["tcp"]},
        fragments={"first": 0, "later": 0}, size_hist={}, ttl_hist={64: total}, src_distinct=900, src_hll=b"",
        top_src_ips=srcs, top_dst_ips=[["10.0.0.2", total, total * 74]], top_src_ports=sports,
        top_dst_ports=dports, victims=[], signatures={}, bidir_packets=0, malformed=0, kernel_drops=0,
        conn_count=-1)
