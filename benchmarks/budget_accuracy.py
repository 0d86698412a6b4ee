"""What the classifier keeps as `[capture] budget_pps` falls: verdicts, breakdowns and detection latency.

Two parts, both with the real code of each stage:

* files (in-process, deterministic): every generated vector (IPv4 and IPv6) and the shared captures go
  through the capture parser and the aggregator engine the way a live capture hands them over above the
  budget: the file is cut into 100 ms counter readings (exact packet and byte counts, as the interface
  counters give them), the records are kept 1 in N at random (the kernel's BPF filter), N chosen by the
  real SamplingController from the readings every 200 ms; the detector's pure logic opens and names the
  incident. The shared captures are slower than a flood: each runs as captured (the controller on the
  file's clock: sampled only where its rate passes the budget), and again as "(stress)", sampled 1 in N
  throughout, the N the budget gives a flood of --pps (far fewer records per window than such a flood
  would give; not counted in the summary's "named wrong"). Each budget is compared with the same file
  unsampled: the verdict (opened and final subtype, family, spoofing), the peak pps, the protocol
  breakdown (largest difference, percentage points), the top sources (the share of the listed ones that
  are truly top, ties included; the median error of their share; the distinct source count), the top
  destination port (truly top) and the country breakdown (total variation distance).
* live (`--live`, root, network namespaces): capture + aggregator + detector as real processes with the
  budget set, floods from `floodwatch traffic send`; per budget and level (5x, 10x the threshold) the
  latency from the first flood frame to incident.opened on the bus, and whether the opened subtype
  names the vector.

    .venv/bin/python benchmarks/budget_accuracy.py [--budgets 20000,10000,5000,2000,1000]
        [--pps 100000] [--seconds 3] [--threshold 10000] [--live] [--live-runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodwatch.aggregate.engine import Engine  # noqa: E402
from floodwatch.aggregate.geo import IptoccLookup  # noqa: E402
from floodwatch.aggregate.sigsample import SignatureSampler  # noqa: E402
from floodwatch.capture.pcapwrite import write_pcap  # noqa: E402
from floodwatch.capture.sampling import UP_HEADROOM, pow2_at_least  # noqa: E402
from floodwatch.detect.classify import classify_capture  # noqa: E402
from floodwatch.detect.evaluate import Detector  # noqa: E402
from floodwatch.messages import IncidentOpened  # noqa: E402
from floodwatch.records import addr_text  # noqa: E402
from floodwatch.settings.aggregator import AggregatorSettings  # noqa: E402
from floodwatch.settings.detector import DetectorSettings  # noqa: E402
from floodwatch.signatures import SignatureMatcher  # noqa: E402
from floodwatch.trafficgen.pcapw import paced  # noqa: E402
from floodwatch.trafficgen.vectors import VectorSpec, frames_for  # noqa: E402
from tests.detect.detect_pipeline import SHARED_PCAPS, read_rows, sampled_windows  # noqa: E402
from tests.detect.test_detect_classify import GENERATED, NAMED_AS, SPOOFED, family_of, named  # noqa: E402

SHARED = {  # file -> (family, subtype, static threshold of tests/detect/test_detect_classify.py)
    "pkt.TCP.synflood.spoofed.pcap": ("syn_flood", "syn_flood", 2_000),
    "amp.UDP.snmp.src161.pcapng": ("udp_flood", "snmp_amplification", 5_000),
    "amp.dns.RRSIG.fragmented.pcap": ("dns_flood", "dns_amplification", 20),
    "amp.TCP.reflection.SYNACK.pcap": ("tcp_flood", "synack_reflection", 5_000),
}


@dataclass
class Run:
    """What one pass over a file gave: the detector's events, the whole-file classification, the truth."""

    opened: str
    last: dict[str, Any]
    classified: dict[str, Any]
    records: int
    packets: int
    rates: list[int]


def one_pass(rows: np.ndarray, wires: np.ndarray, budget: int | None, threshold: int, seed: int = 1,
             fixed: int = 0) -> Run:
    det = Detector(DetectorSettings(pps_threshold=threshold, dynamic=False))
    rates: list[int] = []
    engine = Engine(AggregatorSettings(), SignatureSampler(SignatureMatcher.default()), geo=IptoccLookup())
    windows = sampled_windows(engine, rows, wires, budget, seed, fixed, rates)
    events = [e for w in windows for e in det.step(w)]
    events += det.finish(windows[-1].t_end)
    opened = [e for e in events if isinstance(e, IncidentOpened)]
    return Run(opened=opened[0].attack_subtype if opened else "-", last=events[-1].to_dict() if events else {},
               classified=classify_capture(windows), records=engine.stats["records"], packets=int(rows.size),
               rates=rates)


def top_ok(listed: list[dict[str, Any]], truth: Counter[Any], key: str) -> float:
    """Share of the listed items that are truly among the top (their true count >= the true K-th)."""
    if not listed:
        return 1.0
    kth = sorted(truth.values(), reverse=True)[: len(listed)][-1]
    return sum(truth.get(x[key], 0) >= kth for x in listed) / len(listed)


def share_err(listed: list[dict[str, Any]], truth: Counter[Any], key: str) -> float:
    """Median relative error of the listed items' shares (of the listed total) against the truth."""
    est_total = sum(x["count"] for x in listed) or 1
    true_total = sum(truth.get(x[key], 0) for x in listed) or 1
    true_shares = [truth.get(x[key], 0) / true_total for x in listed]
    errs = [abs(x["count"] / est_total - t) / max(t, 1e-9) for x, t in zip(listed, true_shares, strict=True)]
    return statistics.median(errs) if errs else 0.0


def tv(a: dict[str, float], b: dict[str, float]) -> float:
    """Total variation distance of two breakdowns (0 = same shares, 1 = disjoint)."""
    sa, sb = sum(a.values()) or 1, sum(b.values()) or 1
    return 0.5 * sum(abs(a.get(k, 0) / sa - b.get(k, 0) / sb) for k in set(a) | set(b))


def truths(rows: np.ndarray) -> tuple[Counter[str], Counter[int]]:
    """True per-source and per-destination-port (TCP/UDP) packet counts of the file."""
    srcs, counts = np.unique(rows["src"][rows["ipver"] > 0], return_counts=True)
    src = Counter(dict(zip((addr_text(a) for a in srcs.tolist()), counts.tolist(), strict=True)))
    l4 = rows[(rows["proto"] == 6) | (rows["proto"] == 17)]
    ports, pc = np.unique(l4["dport"], return_counts=True)
    return src, Counter(dict(zip(ports.tolist(), pc.tolist(), strict=True)))


def compare(run: Run, ref: Run, want: tuple[str, str], spoofed: bool | None, rows: np.ndarray) -> dict[str, Any]:
    src, ports = truths(rows)
    inc, ref_inc = run.classified, ref.classified
    got = (run.last.get("attack_family"), run.last.get("attack_subtype"))
    proto = {k: abs(inc["protocol_breakdown"].get(k, 0) - ref_inc["protocol_breakdown"].get(k, 0))
             for k in set(inc["protocol_breakdown"]) | set(ref_inc["protocol_breakdown"])}
    top_port = inc["top_dst_ports"][0]["port"] if inc["top_dst_ports"] else None
    ref_port = ref_inc["top_dst_ports"][0]["port"] if ref_inc["top_dst_ports"] else None
    return {
        "verdict": got[0] == want[0] and named(str(got[1])) == named(want[1]) and named(run.opened) == named(want[1]),
        "classify": (inc["attack_family"], named(inc["attack_subtype"])) == (ref_inc["attack_family"],
                                                                             named(ref_inc["attack_subtype"])),
        "spoof": spoofed is None or run.last.get("spoofing_detected") == spoofed,
        "got": f"{run.opened}/{got[1]}",
        "peak": abs(inc["peak_pps"] - ref_inc["peak_pps"]) / max(ref_inc["peak_pps"], 1),
        "proto_pp": max(proto.values(), default=0.0),
        "src_ok": top_ok(inc["top_src_ips"], src, "ip"),
        "src_err": share_err(inc["top_src_ips"], src, "ip"),
        "port_ok": top_port == ref_port or ports.get(top_port or 0, 0) >= max(ports.values(), default=0),
        "src_count": abs(inc["source_ip_count"] - ref_inc["source_ip_count"]) / max(ref_inc["source_ip_count"], 1),
        "geo_tv": tv(inc["geo_breakdown"], ref_inc["geo_breakdown"]),
        "records": run.records,
        "max_rate": max(run.rates, default=1),
    }


def inputs(args: argparse.Namespace, tmp: Path) -> Iterable[tuple[str, Path, tuple[str, str], bool | None, int]]:
    """(name, file, expected (family, subtype), spoofing expected, threshold) for every input."""
    count = int(args.pps * args.seconds)
    for v6 in (False, True) if args.ip == "both" else (args.ip == "6",):
        for vector in GENERATED:
            path = tmp / f"{vector}{'6' if v6 else '4'}.pcap"
            frames = frames_for(VectorSpec(vector, v6, variety=args.variety, sources=args.sources))
            write_pcap(path, paced(frames, args.pps, count, 1_700_000_000.0))
            sub = NAMED_AS.get(vector, vector)
            yield f"{vector}/{'v6' if v6 else 'v4'}", path, (family_of(vector), sub), vector in SPOOFED, args.threshold
    if SHARED_PCAPS.is_dir() and not args.no_shared:
        for name, (family, sub, threshold) in SHARED.items():
            yield name, SHARED_PCAPS / name, (family, sub), None, threshold
            yield f"{name} (stress)", SHARED_PCAPS / name, (family, sub), None, threshold


def tally(c: dict[str, Any], name: str, fails: list[str], stress: list[str], worst: dict[str, float]) -> None:
    """One input at one budget into the summary: a wrong verdict, and the worst breakdown errors (the
    stress runs only count their verdicts, apart)."""
    ok = c["verdict"] and c["classify"] and c["spoof"]
    if name.endswith("(stress)"):
        stress += [] if ok else [f"{name.removesuffix(' (stress)')}: {c['got']}"]
        return
    fails += [] if ok else [f"{name}: {c['got']}" + ("" if c["spoof"] else " spoofing")]
    for k in ("proto_pp", "geo_tv", "src_err", "peak", "src_count"):
        worst[k] = max(worst.get(k, 0.0), c[k])
    worst["src_ok"] = min(worst.get("src_ok", 1.0), c["src_ok"])
    worst["port"] = worst.get("port", 0) + (not c["port_ok"])


def files_table(args: argparse.Namespace, budgets: list[int]) -> list[str]:
    lines = ["| input | budget | max 1/N | records | verdict (opened/final) | classify same | spoofing | peak err "
             "| proto pp | top src truly top | src share err | sources err | top port right | geo TV |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fails: dict[int, list[str]] = {b: [] for b in budgets}
    stress: dict[int, list[str]] = {b: [] for b in budgets}
    worst: dict[int, dict[str, float]] = {b: {} for b in budgets}
    with tempfile.TemporaryDirectory(prefix="fwbudget") as tmp:
        for name, path, want, spoofed, threshold in inputs(args, Path(tmp)):
            rows, wires = read_rows(path)
            ref = one_pass(rows, wires, None, threshold)
            for budget in budgets:
                # a capture slower than a flood of --pps: sampled 1 in N as the budget would such a flood
                fixed = 0 if not name.endswith("(stress)") else pow2_at_least(args.pps / (budget * UP_HEADROOM))
                c = compare(one_pass(rows, wires, budget, threshold, fixed=fixed), ref, want, spoofed, rows)
                tally(c, name, fails[budget], stress[budget], worst[budget])
                lines.append(f"| {name} | {budget} | {c['max_rate']} | {c['records']:,} | "
                             f"{'yes' if c['verdict'] else 'NO ' + c['got']} | {'yes' if c['classify'] else 'NO'} | "
                             f"{'yes' if c['spoof'] else 'NO'} | {c['peak']:.1%} | {c['proto_pp']:.1f} | "
                             f"{c['src_ok']:.0%} | {c['src_err']:.0%} | {c['src_count']:.1%} | "
                             f"{'yes' if c['port_ok'] else 'NO'} | "
                             f"{c['geo_tv']:.3f} |")
            named = {b: not any(f.startswith(name + ":") for f in fails[b]) for b in budgets}
            print(f"{name}: " + ", ".join(f"{b}:{'ok' if ok else 'NO'}" for b, ok in named.items()), flush=True)
    summary = ["", "| budget | inputs named wrong | worst proto pp | worst peak err | worst top src truly top | "
               "worst src share err | worst sources err | top port wrong | worst geo TV | stress: named wrong |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in budgets:
        w = worst[b]
        summary.append(f"| {b} | {len(fails[b])} {'; '.join(fails[b])} | {w['proto_pp']:.1f} | {w['peak']:.1%} | "
                       f"{w['src_ok']:.0%} | {w['src_err']:.0%} | {w['src_count']:.1%} | {int(w['port'])} | "
                       f"{w['geo_tv']:.3f} | {len(stress[b])} {'; '.join(stress[b])} |")
    return (lines if args.verbose else []) + summary


def live_table(args: argparse.Namespace, budgets: list[int]) -> list[str]:
    from tests.detect.detect_live import live_pipeline, sender_report
    from tests.helpers import exit_on_sigterm, netns_pair

    exit_on_sigterm()
    settings = {"pps_threshold": args.live_threshold, "dynamic": False, "hold_down": 0.5, "cooldown": 0.3}
    lines = ["", f"live: threshold {args.live_threshold} pps, {args.live_runs} floods per cell",
             "| budget | level | vector | latency to incident.opened | achieved pps | named right |",
             "| --- | --- | --- | --- | --- | --- |"]
    for budget in budgets:
        with tempfile.TemporaryDirectory(prefix="fwbudlive") as tmp, netns_pair("fwbud") as pair, \
                live_pipeline(pair, Path(tmp), settings, capture={"budget_pps": budget}) as live:
            for level in (5.0, 10.0):
                for vector in args.live_vectors.split(","):
                    lat, pps, named = [], [], 0
                    for _ in range(args.live_runs):
                        sender = live.send(vector, level * args.live_threshold, 1.5)
                        opened, arrival = live.opened(timeout=20)
                        report = sender_report(sender)
                        live.resolved(timeout=30)
                        lat.append((arrival - float(report["first_ts"])) * 1000)
                        pps.append(float(report["achieved_pps"]))
                        named += opened.attack_subtype == vector
                    lines.append(f"| {budget} | {level:g}x | {vector} | median {statistics.median(lat):.0f} ms "
                                 f"(max {max(lat):.0f}) | {statistics.median(pps):,.0f} | {named}/{args.live_runs} |")
                    print(lines[-1], flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="20000,10000,5000,2000,1000")
    ap.add_argument("--pps", type=float, default=100_000, help="generated floods: packets/s (file time)")
    ap.add_argument("--seconds", type=float, default=3.0, help="generated floods: length (file time)")
    ap.add_argument("--threshold", type=int, default=10_000, help="static threshold for the generated floods")
    ap.add_argument("--variety", type=int, default=4096, help="distinct frames per generated flood")
    ap.add_argument("--sources", type=int, default=2000, help="distinct sources per generated flood")
    ap.add_argument("--vectors", default="", help="only these generated vectors (comma separated)")
    ap.add_argument("--ip", choices=("4", "6", "both"), default="both", help="generated floods over IPv4, IPv6")
    ap.add_argument("--no-shared", action="store_true", help="leave out the shared captures")
    ap.add_argument("--verbose", action="store_true", help="one row per input and budget")
    ap.add_argument("--no-files", action="store_true")
    ap.add_argument("--live", action="store_true", help="also the live latency part (root, namespaces)")
    ap.add_argument("--live-threshold", type=int, default=2000)
    ap.add_argument("--live-runs", type=int, default=3)
    ap.add_argument("--live-vectors", default="udp_flood,syn_flood,dns_amplification")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.vectors:
        GENERATED[:] = [v for v in GENERATED if v in args.vectors.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    lines = [f"generated floods {args.pps:,.0f} pps x {args.seconds:g} s, {args.sources} sources, static threshold "
             f"{args.threshold}; budgets {budgets}; reference: the same file unsampled"]
    if not args.no_files:
        lines += files_table(args, budgets)
    if args.live:
        lines += live_table(args, budgets)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
