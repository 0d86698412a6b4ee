"""CPU of an incident's update (issue 17): the detector classifies the incident's whole profile once a
second (`update_interval`) while a flood lasts, and a long flood's profile holds thousands of source ports
and sources (each window adds its top ten of each, kept up to 2 x 2,000). Profiles of a sampled flood
(tests/detect/detect_factory.py `flood_window`: random source ports, heavy and random sources, one victim)
after 1 s ... 300 s of windows; the median CPU of `classify_profile` on each, per tree; with --ref the
same on that commit (git archive), the trees alternating, same run.

    .venv/bin/python benchmarks/classify_update.py [--ref main] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SECONDS = (1, 10, 60, 300)
KINDS = ("udp", "reflection")


def child(runs: int, factory: str) -> None:
    """In the tree under test (cwd first on sys.path): print {"kind/seconds": ms} as JSON."""
    import importlib.util
    import random
    import statistics
    import time

    import floodwatch
    from floodwatch.detect.classify import classify_profile
    from floodwatch.detect.profile import Profile

    assert floodwatch.__file__ is not None and floodwatch.__file__.startswith(os.getcwd()), floodwatch.__file__
    spec = importlib.util.spec_from_file_location("detect_factory", factory)  # this checkout's, in any tree
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    flood_window = mod.flood_window

    out = {}
    for kind in KINDS:
        rnd, p = random.Random(kind), Profile()
        for s in SECONDS:
            while p.windows < s * 10:
                p.add(flood_window(rnd, p.windows, kind))
            cpu = []
            for _ in range(runs):
                t = time.process_time()
                classify_profile(p, 10000, 258000, 150_000_000)
                cpu.append(time.process_time() - t)
            out[f"{kind}/{s}"] = statistics.median(cpu) * 1e3
    print(json.dumps(out))


def run_in(tree: Path, bench_tree: Path, runs: int) -> dict[str, float]:
    # the window builder from this checkout's tests (the tree under test may predate it)
    factory = str(bench_tree / "tests" / "detect" / "detect_factory.py")
    code = (f"import sys; sys.path.insert(0, {str(bench_tree / 'benchmarks')!r}); import classify_update as b; "
            f"sys.path.insert(0, '.'); b.child({runs}, {factory!r})")
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="", help="also run this commit (git archive), alternating, same run")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.helpers import REPO, extract_commit

    with tempfile.TemporaryDirectory() as d:
        trees = {"this checkout": REPO}
        if a.ref:
            trees = {f"ref {a.ref}": extract_commit(a.ref, Path(d)), **trees}
        got: dict[str, list[dict[str, float]]] = {n: [] for n in trees}
        for _ in range(2):
            for name, tree in trees.items():
                got[name].append(run_in(tree, REPO, a.runs))
        print(f"classify_profile per incident update, CPU ms (median of {a.runs}, best of 2 rounds), "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        print("| tree | " + " | ".join(f"{k} {s} s" for k in KINDS for s in SECONDS) + " |")
        print("| --- |" + " --- |" * (len(KINDS) * len(SECONDS)))
        for name, rounds in got.items():
            cells = [min(r[f"{k}/{s}"] for r in rounds) for k in KINDS for s in SECONDS]
            print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
