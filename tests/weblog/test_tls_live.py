"""Live: HTTPS without logs. nginx with TLS in namespace B, the whole agent in B with the weblog actor
OFF; new TLS connections from namespace A (h2load, one request per connection) must open an http_flood
incident named tls_handshake_flood with A's address on top, from packets alone; a few connections open
nothing. Needs root, network namespaces, nginx, h2load and openssl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from floodwatch.reporter.mapping import parse_iso
from tests.conftest import require_netns
from tests.helpers import NetnsPair, eventually, netns_pair
from tests.weblog.weblog_live import have_web_tools, nginx, running_agent

pytestmark = [pytest.mark.slow, pytest.mark.netns]


def new_connections(pair: NetnsPair, seconds: float, per_run: int) -> int:
    """h2load runs of `per_run` connections with one request each (each one a new TLS handshake) from
    namespace A for about `seconds`; the requests that succeeded."""
    end, done = time.monotonic() + seconds, 0
    while done == 0 or time.monotonic() < end:
        out = pair.run(pair.ns_a, ["h2load", "-n", str(per_run), "-c", str(per_run), "-t", "1", "--h1",
                                   f"https://{pair.ip4_b}/"], check=False, timeout=60)
        done += sum(int(line.split()[7]) for line in out.stdout.splitlines() if line.startswith("requests:"))
    return done


def tls_incidents(agent: Any) -> list[dict[str, Any]]:
    return [i for i in agent.incidents() if i.get("attack_subtype") == "tls_handshake_flood"]


def test_tls_handshake_flood_from_packets_without_logs(tmp_path: Path) -> None:
    require_netns()
    if not have_web_tools():
        pytest.skip("needs nginx, h2load and openssl (scripts/setup.sh)")
    with netns_pair("fwtls") as pair, nginx(pair, tmp_path / "nginx", key="ec") as access_log, \
            running_agent(tmp_path, pair, access_log, weblog=False) as agent:
        assert new_connections(pair, 0, 3) == 3  # a few visitors
        flood_start = time.time()
        flood_done = new_connections(pair, 4.0, 1000)
        assert flood_done >= 1000, flood_done
        inc = eventually(lambda: next(iter(tls_incidents(agent)), None), 20,
                         message="a tls_handshake_flood incident at the embedded server")
        assert inc["attack_family"] == "http_flood"
        assert inc["top_src_ips"][0]["ip"] == pair.ip4_a
        assert len(tls_incidents(agent)) == 1  # the few visitors opened nothing, the flood one incident
        assert parse_iso(inc["started_at"]) >= flood_start - 0.5
