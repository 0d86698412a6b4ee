"""Same output as another commit: `floodwatch analyze --json --classify` on every shared capture.

Runs the analyze of a baseline commit (`git archive`) and of this checkout on each capture in
../shared/pcaps (or the files given) and compares the JSON lines field by field, apart from the
random incident keys. Exit status 1 and the differing fields when any line differs. For changes that
must keep the behaviour exactly (the aggregator's cost work of issue 17).

    .venv/bin/python benchmarks/analyze_same.py --ref main [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import REPO, extract_commit

PCAPS = REPO.parent / "shared" / "pcaps"  # as tests/conftest.py finds them
RANDOM = ("incident_key",)  # uuid4 per incident: differs between any two runs


def analyze(tree: Path, path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "floodwatch.cli", "analyze", str(path), "--json", "--classify"],
                         check=True, capture_output=True, text=True, cwd=tree, timeout=900).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for line in lines:
        for k in RANDOM:
            if k in line:
                line[k] = "<random>"
    return lines


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="main", help="the baseline commit")
    ap.add_argument("files", nargs="*", help="captures (default: every capture in ../shared/pcaps)")
    a = ap.parse_args()
    files = [Path(f) for f in a.files] or sorted(p for p in PCAPS.glob("*.pcap*"))
    if not files:
        print(f"no captures in {PCAPS}")
        return 2
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        ref = extract_commit(a.ref, Path(d))
        for path in files:
            old, new = analyze(ref, path), analyze(REPO, path)
            diffs = differences(old, new)
            print(f"{path.name}: {len(new)} lines, " + ("same" if not diffs else f"{len(diffs)} DIFFERENCES"))
            for line in diffs[:20]:
                print("   ", line)
            bad += bool(diffs)
    print("all the same" if not bad else f"{bad} file(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
