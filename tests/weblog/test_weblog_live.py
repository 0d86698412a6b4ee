"""Live: nginx (HTTP/1.1 and HTTPS with HTTP/2) in namespace B writing its access log, the whole agent in
B with the weblog actor on, h2load floods and a benign crowd from namespace A; we assert on what the
embedded server stored. Needs root, network namespaces, nginx, h2load and openssl."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_netns
from tests.helpers import PYTHON, NetnsPair, eventually, netns_pair, try_status
from tests.weblog.weblog_live import flood_report, h2load, have_web_tools, nginx, running_agent

pytestmark = [pytest.mark.slow, pytest.mark.netns]
DETECT = {"hold_down": 1.5, "cooldown": 0.5}  # faster resolution than the defaults, to bound the test's time

CROWD = r"""
import http.client, random, sys, threading, time
server, seconds, addrs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
paths = [f"/shop/item/{i}" for i in range(60)] + ["/", "/cart", "/search", "/static/app.css"]
agents = [f"Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0" for v in range(100, 130)]
done = [0]
def browse(addr):
    rng = random.Random(addr)
    ua = rng.choice(agents)
    end = time.monotonic() + seconds
    conn = http.client.HTTPConnection(server, 80, source_address=(addr, 0), timeout=5)
    while time.monotonic() < end:
        path = rng.choice(paths) + (f"?q={rng.randrange(50)}" if rng.random() < 0.2 else "")
        conn.request("GET", path, headers={"User-Agent": ua})
        conn.getresponse().read()
        done[0] += 1
        time.sleep(rng.uniform(0.3, 1.0))  # a person's pace, one page after another
threads = [threading.Thread(target=browse, args=(a,)) for a in addrs]
for t in threads: t.start()
for t in threads: t.join()
print(done[0])
"""


def crowd(pair: NetnsPair, n: int, seconds: float) -> int:
    """n addresses in namespace A browsing at a person's pace; the requests they made."""
    base = pair.ip4_a.rsplit(".", 1)[0]
    addrs = [f"{base}.{10 + i}" for i in range(n)]
    batch = "".join(f"addr add {a}/24 dev {pair.if_a}\n" for a in addrs)
    subprocess.run(["ip", "-n", pair.ns_a, "-batch", "-"], input=batch, text=True, check=True, capture_output=True)
    out = pair.run(pair.ns_a, [PYTHON, "-c", CROWD, pair.ip4_b, str(seconds), *addrs], timeout=seconds + 60)
    return int(out.stdout.strip())


def weblog_counters(config: Path) -> dict[str, Any]:
    counters: dict[str, Any] = try_status(config).get("weblog", {}).get("counters", {})
    return counters


def one_new(agent: Any, before: set[str]) -> dict[str, Any] | None:
    new = [i for i in agent.http_incidents() if i["incident_key"] not in before]
    return new[0] if len(new) == 1 else None


def test_weblog_live_floods_open_http_flood_and_a_crowd_opens_nothing(tmp_path: Path) -> None:
    require_netns()
    if not have_web_tools():
        pytest.skip("needs nginx, h2load and openssl (scripts/setup.sh)")
    with netns_pair("fwweb") as pair, nginx(pair, tmp_path / "nginx") as access_log, \
            running_agent(tmp_path, pair, access_log, DETECT) as agent:
        # a crowd: 200 addresses at a person's pace (~300 requests/s, over the 200/s floor) opens nothing
        made = crowd(pair, 200, 6.0)
        eventually(lambda: weblog_counters(agent.config).get("requests", 0) >= made, 10,
                   message="the weblog actor read every request of the crowd")
        assert agent.http_incidents() == []

        # HTTP/1.1 keep-alive flood from one address: one incident, that address on top
        report = flood_report(h2load(pair, 4, http2=False))
        assert report["succeeded"] > 2000
        inc = eventually(lambda: one_new(agent, set()), 15, message="an http_flood incident for HTTP/1.1")
        assert inc["top_src_ips"][0]["ip"] == pair.ip4_a
        shown = agent.incident_show(inc["incident_id"])  # the weblog's details reached the server
        details = shown["history"][0]["body"]
        assert details["http_site"] == "shop" and details["http_top_paths"][0]["path"] == "/"
        assert details["http_top_agents"][0]["agent"].startswith("h2load")
        assert details["http_status_mix"]["2xx"] == 100.0
        assert any(f"-s {pair.ip4_a} -j DROP" in p for p in details["mitigation_proposals"])
        first = inc["incident_key"]
        eventually(lambda: [i for i in agent.http_incidents() if i["status"] == "resolved"], 20,
                   message="the HTTP/1.1 incident resolved")

        # HTTPS (HTTP/2) flood, the log rotated by rename (logrotate + nginx's reopen) while it runs
        read = weblog_counters(agent.config).get("requests", 0)
        flood = h2load(pair, 8, http2=True)
        eventually(lambda: weblog_counters(agent.config).get("requests", 0) > read + 5000, 15,
                   message="the HTTP/2 flood under way")
        os.rename(access_log, f"{access_log}.1")
        os.kill(int((access_log.parent / "nginx.pid").read_text()), 10)  # SIGUSR1: nginx reopens its log
        eventually(lambda: access_log.exists() and access_log.stat().st_size > 0, 10,
                   message="nginx writing the new log while the flood goes on")
        report = flood_report(flood)
        assert report["succeeded"] > 2000
        inc = eventually(lambda: one_new(agent, {first}), 15, message="an http_flood incident for HTTP/2")
        assert inc["top_src_ips"][0]["ip"] == pair.ip4_a
        eventually(lambda: [i for i in agent.http_incidents()
                            if i["incident_key"] == inc["incident_key"] and i["status"] == "resolved"],
                   30, message="the HTTP/2 incident resolved")
        assert len(agent.http_incidents()) == 2  # the rotation did not split the flood into two incidents
        assert weblog_counters(agent.config).get("rotations", 0) >= 1
