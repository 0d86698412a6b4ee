"""Every statement in an incident is true, live: the whole agent (supervisor, every actor, the embedded
server) in namespace B, floods from namespace A, assertions on what the server stored.

* random source ports (IPv4) and a spread over an IPv6 /64 to port 53 name no reflection vector;
  a real DNS amplification is named, confirmed by its payload;
* random bytes behind an IPv4 ethertype: the rate agrees with the kernel's counters, the frames are a
  `malformed_flood` and the target is the host itself;
* a second and a third phase toward other addresses during the hold-down add their targets (an
  address, then a prefix) and their vectors to the open incident.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_netns
from tests.helpers import PYTHON, eventually, free_port, netns_pair, write_config
from tests.test_system import Agent, agent_running

pytestmark = [pytest.mark.slow, pytest.mark.netns]
REFLECTION = {"chargen", "portmap", "ntp", "snmp", "dns", "tftp", "qotd", "netbios", "rip", "mdns", "ssdp"}


RX_WATCH = r"""
import json, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
out, end, moved = [], time.monotonic() + seconds, 0.0
while time.monotonic() < end and not (moved and time.monotonic() - moved > 1.0):
    with open(path) as f:
        out.append((time.monotonic(), int(f.read())))
    if len(out) > 1 and out[-1][1] - out[-2][1] > 100:
        moved = out[-1][0]
    time.sleep(0.005)
print(json.dumps(out))
"""


def busiest_window(samples: list[tuple[float, int]], width: float = 0.1) -> float:
    """The most packets the kernel can have counted in any `width` seconds, as a rate: a ceiling that
    holds whatever the reader's timing. A window [T, T + width) starting between readings i and i + 1 lies
    inside the stretch from reading i to the first reading at or after reading i + 1 plus `width`, so that
    stretch's count bounds the window's (a reader that stalled under the flood widens the stretch, never
    hides packets)."""
    best, j = 0.0, 0
    for i in range(len(samples) - 1):
        n0 = samples[i][1]
        j = max(j, i + 1)
        while j < len(samples) and samples[j][0] < samples[i + 1][0] + width:
            j += 1
        if j == len(samples):
            break
        best = max(best, (samples[j][1] - n0) / width)
    return best


class TruthAgent(Agent):
    """The system test's agent on a free port, with the default hold-down (5 s)."""

    def __init__(self, tmp: Path, pair: Any) -> None:
        super().__init__(tmp, pair)
        port = free_port()
        self.cfg["apiserver"]["listen"] = f"127.0.0.1:{port}"
        self.cfg["reporter"]["url"] = f"http://127.0.0.1:{port}/api/v1/agent"
        self.cfg["detector"].update(hold_down=5.0, cooldown=1.0)  # the default hold-down
        self.config = write_config(tmp / "floodwatch.toml", self.cfg)

    def send(self, vector: str, pps: int, seconds: float, *extra: str, dst: str = "") -> dict[str, Any]:
        """One flood from A (waited for); the sender's report."""
        argv = [PYTHON, "-m", "floodwatch.cli", "traffic", "send", vector, "--iface", self.pair.if_a,
                "--dst", dst or self.pair.ip4_b, "--dst-mac", self.pair.mac_b, "--pps", str(pps),
                "--duration", str(seconds), *extra]
        out = self.pair.run(self.pair.ns_a, argv, timeout=180)
        report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        # the premise of every test here: a flood well over the threshold (a loaded machine slows the sender)
        floor = 2 * self.cfg["detector"]["pps_threshold"]
        assert report["achieved_pps"] >= floor, f"the sender reached only {report} (< {floor} pps): no flood"
        return report

    def watch_rx(self, seconds: float) -> subprocess.Popen[str]:
        """Read B's rx_packets every 5 ms (in the background) until a flood has come and gone for a second,
        or `seconds` at most: the kernel's own count."""
        path = f"/sys/class/net/{self.pair.if_b}/statistics/rx_packets"
        return self.pair.popen(self.pair.ns_b, [PYTHON, "-c", RX_WATCH, path, str(seconds)],
                               stdout=subprocess.PIPE, text=True)

    def settled(self) -> int:
        """The incidents stored once none is open (a flood that a loaded machine split in two is over): the
        `seen` of the next flood."""

        def count() -> tuple[int] | None:
            rows = self.server("incidents")
            return (len(rows),) if all(i.get("status") == "resolved" for i in rows) else None

        return eventually(count, 60, interval=0.5, message="every incident resolved on the server")[0]

    def resolved_after(self, seen: int) -> dict[str, Any]:
        """The next incident the server stored (beyond the `seen` first ones), once resolved."""

        def newest() -> dict[str, Any] | None:
            rows = self.server("incidents")
            if len(rows) <= seen:
                return None
            inc: dict[str, Any] = rows[len(rows) - seen - 1]  # newest first: the first one after `seen`
            return inc if inc.get("status") == "resolved" else None

        try:
            return eventually(newest, 60, interval=0.5, message="the next incident resolved on the server")
        except AssertionError as e:
            rows = self.server("incidents")
            new = [(r.get("status"), r.get("attack_subtype"), r.get("started_at"), r.get("peak_pps"))
                   for r in rows[: max(len(rows) - seen, 0)]]
            raise AssertionError(f"{e}; beyond the {seen} first: {new}") from None


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TruthAgent]:
    require_netns()
    tmp = tmp_path_factory.mktemp("truth")
    with netns_pair("fwtru") as pair, agent_running(TruthAgent(tmp, pair)) as a:
        yield a


def reflection_vectors(inc: dict[str, Any]) -> list[str]:
    return [v["subtype"] for v in inc["vectors"] if v["subtype"].removesuffix("_amplification") in REFLECTION]


def test_random_source_ports_name_no_reflection(agent: TruthAgent) -> None:
    seen = len(agent.server("incidents"))
    agent.send("udp_flood", 150_000, 3.0, "--sport", "random", "--variety", "65536")
    inc = agent.resolved_after(seen)
    assert (inc["attack_family"], inc["attack_subtype"]) == ("udp_flood", "udp_flood")
    assert reflection_vectors(inc) == [], inc["vectors"]
    assert [v["evidence"] for v in inc["vectors"]] == ["header"] * len(inc["vectors"])

    seen = agent.settled()
    agent.send("udp_flood", 150_000, 3.0, "--ipv6", "--sport", "random", "--dport", "53", "--dst-spread", "64",
               "--variety", "65536", dst=agent.pair.ip6_b)
    inc = agent.resolved_after(seen)
    assert (inc["attack_family"], inc["attack_subtype"]) == ("dns_flood", "dns_query_flood")
    assert reflection_vectors(inc) == [], inc["vectors"]

    seen = agent.settled()
    agent.send("dns_amplification", 20_000, 2.0)
    inc = agent.resolved_after(seen)
    assert inc["attack_subtype"] == "dns_amplification"
    top = inc["vectors"][0]
    assert (top["subtype"], top["confirmed"], top["evidence"]) == ("dns_amplification", True, "payload")


def test_malformed_frames_agree_with_the_kernel_and_target_the_host(agent: TruthAgent) -> None:
    seen = len(agent.server("incidents"))
    watch = agent.watch_rx(60.0)
    report = agent.send("malformed_flood", 200_000, 3.0, "--variety", "8192")
    samples = [tuple(s) for s in json.loads(watch.communicate(timeout=30)[0])]
    inc = agent.resolved_after(seen)
    assert samples[-1][1] - samples[0][1] >= report["sent"]
    kernel_peak = busiest_window(samples)  # type: ignore[arg-type]
    assert report["sent"] / report["seconds"] * 0.8 <= inc["peak_pps"] <= 1.1 * kernel_peak, (
        inc["peak_pps"], kernel_peak, report)
    assert inc["attack_subtype"] == "malformed_flood"
    assert inc["protocol_breakdown"].get("malformed", 0) >= 99
    assert sorted(inc["target_ips"]) == sorted([agent.pair.ip4_b, agent.pair.ip6_b])
    assert not inc.get("top_src_ips")  # random bytes name no source


def test_later_phases_add_their_targets(agent: TruthAgent) -> None:
    seen = len(agent.server("incidents"))
    base = agent.pair.ip4_b.rsplit(".", 1)[0]
    agent.send("syn_flood", 20_000, 2.0)
    agent.send("udp_flood", 20_000, 2.0, dst=f"{base}.77")  # within the hold-down (a sender starts in ~1 s)
    agent.send("udp_flood", 20_000, 2.0, "--dst-spread", "24", dst="203.0.113.1")
    inc = agent.resolved_after(seen)
    assert len(agent.server("incidents")) == seen + 1, "one incident for the three phases"
    assert set(inc["target_ips"]) == {agent.pair.ip4_b, f"{base}.77", "203.0.113.0/24"}, inc["target_ips"]
    assert {"syn_flood", "udp_flood"} <= {v["subtype"] for v in inc["vectors"]}
