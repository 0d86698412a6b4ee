"""Does a 401 tell an attacker whether a node UUID exists? Times refused heartbeats for an unknown UUID
and for a known UUID with a wrong key, interleaved on two keep-alive connections, against the server of
a given checkout (--repo: run it once for this tree and once for a baseline such as /work/main).

    .venv/bin/python benchmarks/server_auth_timing.py --requests 3000
    .venv/bin/python benchmarks/server_auth_timing.py --requests 3000 --repo /work/main   # before

Prints the median and p90 of each path and the difference of the medians. The order of the two paths
is shuffled in every round, so neither always follows the other.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def start(repo: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int, dict[str, str]]:
    db, port_file = tmp / "server.db", tmp / "port"
    made = subprocess.run([sys.executable, "-m", "floodwatch.server", "add-node", "bench", "--db", str(db), "--json"],
                          cwd=repo, capture_output=True, text=True, check=True)
    node = json.loads(made.stdout)
    proc = subprocess.Popen([sys.executable, "-m", "floodwatch.server", "--listen", "127.0.0.1:0", "--db", str(db),
                             "--port-file", str(port_file)], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip().isdigit()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text()), node


def timed(conn: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[int, float]:
    t = time.perf_counter()
    conn.request("POST", "/api/v1/agent/heartbeat", body=b"{}", headers={"Content-Type": "application/json", **headers})
    r = conn.getresponse()
    r.read()
    return r.status, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--repo", type=Path, default=HERE)
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, port, node = start(args.repo.resolve(), Path(d))
        try:
            cases = {"unknown uuid": {"X-Node-UUID": str(uuid.uuid4()), "Authorization": f"Bearer {node['api_key']}"},
                     "known uuid, wrong key": {"X-Node-UUID": node["node_uuid"],
                                               "Authorization": f"Bearer {node['api_key']}x"}}
            conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name in cases}
            times: dict[str, list[float]] = {name: [] for name in cases}
            rng = random.Random(1)
            names = list(cases)
            for i in range(args.requests + 200):
                rng.shuffle(names)
                for name in names:
                    status, took = timed(conns[name], cases[name])
                    assert status == 401, (name, status)
                    if i >= 200:  # warm-up
                        times[name].append(took * 1e3)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"repo {args.repo}, {args.requests} requests per path, interleaved")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"  {name:<24} median {statistics.median(ts):.3f} ms  p90 {q[8]:.3f} ms")
    diff = statistics.median(times["unknown uuid"]) - statistics.median(times["known uuid, wrong key"])
    print(f"  unknown - known (wrong key), medians: {diff * 1e3:+.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
