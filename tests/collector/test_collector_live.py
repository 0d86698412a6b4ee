"""softflowd exporting from a live interface under a real flood, across network namespaces.

Namespace A sends an NTP reflection flood to B over the veth. softflowd listens on B's side of the veth
(`-i`) and exports NetFlow v9 / IPFIX with a 1 s active timeout over the veth to the collector actor,
which runs in namespace A; the aggregator and detector run on the host and talk to it over ipc
sockets. The incident must name B's address as the victim, the right family, and B (the export source
address) as the exporter.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from floodwatch.messages import IncidentOpened
from tests.helpers import (
    PYTHON,
    REPO,
    BusHarness,
    NetnsPair,
    base_config,
    eventually,
    ipc_endpoints,
    netns_pair,
    start_actor,
    stop_process,
    write_config,
)

PORT = 2055  # inside namespace A: nothing else listens there
pytestmark = [pytest.mark.timeout(45),
              pytest.mark.skipif(not shutil.which("softflowd"), reason="softflowd not installed (scripts/setup.sh)")]


@contextmanager
def collector_in(pair: NetnsPair, tmp_path: Path) -> Iterator[BusHarness]:
    """Collector in namespace A (listening on its veth address), aggregator and detector on the host."""
    endpoints = ipc_endpoints(tmp_path / "bus")
    cfg = base_config(tmp_path, endpoints,
                      collector={"enabled": True, "networks": [f"{pair.ip4_b}/32"],
                                 "listen": {"netflow": f"{pair.ip4_a}:{PORT}", "ipfix": f"{pair.ip4_a}:{PORT + 1}"}},
                      detector={"pps_threshold": 2000, "dynamic": False, "hold_down": 1.0})
    path = write_config(tmp_path / "fw.toml", cfg)
    with ExitStack() as stack:
        harness = stack.enter_context(BusHarness(endpoints))
        for name, ns in (("detector", None), ("aggregator", None), ("collector", pair.ns_a)):
            proc = start_actor(name, path, tmp_path / f"{name}.log", netns=ns)
            stack.callback(stop_process, proc)
            harness.wait_ready(name)
        yield harness


@pytest.mark.parametrize(("version", "port"), [(9, PORT), (10, PORT + 1)])
def test_softflowd_on_a_live_interface_under_a_flood(tmp_path: Path, version: int, port: int) -> None:
    with netns_pair("fwsfl") as pair, collector_in(pair, tmp_path) as harness, ExitStack() as stack:
        sub = stack.enter_context(closing(harness.subscriber(IncidentOpened)))
        exporter = pair.popen(pair.ns_b, ["softflowd", "-d", "-i", pair.if_b, "-n", f"{pair.ip4_a}:{port}",
                                          "-v", str(version), "-t", "maxlife=1", "-t", "expint=1",
                                          "-p", str(tmp_path / "softflowd.pid"), "-c", str(tmp_path / "softflowd.ctl")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop_process, exporter)
        flood = pair.popen(pair.ns_a, [PYTHON, "-m", "floodwatch.cli", "traffic", "send", "ntp_amplification",
                                       "--iface", pair.if_a, "--pps", "5000", "--duration", "12", "--dst", pair.ip4_b,
                                       "--dst-mac", pair.mac_b, "--sources", "200"],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop_process, flood)
        opened = sub.get(IncidentOpened, timeout=20)  # 1 s active timeout + 1 s windows: seconds, not 20
        assert pair.ip4_b in opened.target_ips
        assert (opened.attack_family, opened.attack_subtype) == ("udp_flood", "ntp_amplification")
        assert opened.exporters == [pair.ip4_b]  # the export source: softflowd's side of the veth
        # the counters come with the collector's heartbeat: the one after the flows arrived, not an older one
        counters = eventually(lambda: (c := harness.counters("collector")).get("flows", 0) > 0 and c, 15,
                              message="the collector's heartbeat counting the flows")
        assert counters.get("malformed", 0) == 0 and counters.get("flows", 0) > 0, counters
