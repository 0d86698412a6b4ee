"""Real exporters -> the collector actor -> the real aggregator and detector processes.

softflowd (NetFlow v5, v9, IPFIX) and pmacctd's sfprobe plugin (sFlow v5) read a flood capture (`-r` /
pcap_savefile) and export it to the collector over loopback UDP; the flood must open an incident for the
right victim and family, and the traffic windows' totals scaled by sampling must match what was sent.
"""

from __future__ import annotations

import functools
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from floodwatch.bus import Endpoints
from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.collector import exportgen as G
from floodwatch.messages import IncidentOpened, TrafficWindow
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.helpers import (
    BusHarness,
    base_config,
    eventually,
    free_port,
    start_actor,
    stop_process,
    tcp_endpoints,
    write_config,
)

VICTIM = "198.18.0.1"
PACKETS = 20_000
T0 = 1_700_000_000.0
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flood") / "ntp.pcap"
    write_pcap(path, paced(frames_for(VectorSpec("ntp_amplification", dst=VICTIM, sources=500)), 10_000, PACKETS, T0))
    return path


@contextmanager
def pipeline(tmp_path: Path, detector: dict[str, object] | None = None) -> Iterator[tuple[BusHarness, dict[str, int]]]:
    """Collector, aggregator and detector as real processes on a test bus; yields the UDP ports."""
    ports = {"sflow": free_port(), "netflow": free_port(), "ipfix": free_port()}
    cfg = base_config(tmp_path, tcp_endpoints(),
                      collector={"enabled": True, "networks": ["198.18.0.0/24"],
                                 "listen": {k: f"127.0.0.1:{p}" for k, p in ports.items()}},
                      detector=detector or {"pps_threshold": 2000, "dynamic": False, "hold_down": 1.0})
    path = write_config(tmp_path / "fw.toml", cfg)
    with ExitStack() as stack:
        harness = stack.enter_context(BusHarness(tcp_endpoints_of(cfg)))
        for name in ("detector", "aggregator", "collector"):
            proc = start_actor(name, path, tmp_path / f"{name}.log")
            stack.callback(stop_process, proc)
            harness.wait_ready(name)
        yield harness, ports


def tcp_endpoints_of(cfg: dict[str, dict[str, str]]) -> Endpoints:
    b = cfg["bus"]
    return Endpoints(b["events_in"], b["events_out"], b["control"], b["packets"], b["frames"])


def softflowd(pcap: Path, port: int, version: int) -> None:
    subprocess.run(["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", str(version), "-d"],
                   check=True, timeout=60, capture_output=True)


def pmacct_sflow(pcap: Path, port: int, rate: int, tmp_path: Path) -> None:
    conf = tmp_path / "pmacctd.conf"
    conf.write_text(f"daemonize: false\npcap_savefile: {pcap}\npcap_savefile_wait: false\nplugins: sfprobe\n"
                    f"sfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: 127.0.0.1\nsampling_rate: {rate}\n")
    proc = subprocess.Popen(["pmacctd", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=30)  # it exits when the file is read and its plugin flushed
    finally:
        stop_process(proc)


def check(harness: BusHarness, run: Callable[[], None], expected: int, tolerance: float = 0.1,
          malformed: int = 0) -> None:
    """Run the exporter; the incident names the victim, the family and the exporter; the windows add up to
    the flood."""
    sub = harness.subscriber(IncidentOpened, TrafficWindow)
    with closing(sub):
        run()
        done = time.time()  # every datagram was sent: the windows up to here (+ lateness) hold them all
        opened: IncidentOpened | None = None
        total, last = 0, 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (opened is None or last < done + 0.5):
            m: IncidentOpened | TrafficWindow = sub.get(timeout=max(deadline - time.monotonic(), 0.1))
            if isinstance(m, TrafficWindow):
                total += m.packets_in
                last = m.t_start
            elif isinstance(m, IncidentOpened):
                opened = m
    assert opened is not None, "no incident"
    assert VICTIM in opened.target_ips
    assert (opened.attack_family, opened.attack_subtype) == ("udp_flood", "ntp_amplification")
    assert opened.exporters == ["127.0.0.1"]  # the router that saw it (softflowd / pmacctd on loopback)
    assert abs(total - expected) <= tolerance * expected, (total, expected)
    counters = harness.counters("collector")
    assert counters.get("malformed", 0) == malformed, counters


@pytest.mark.skipif(not shutil.which("softflowd"), reason="softflowd not installed (scripts/setup.sh)")
@pytest.mark.parametrize(("version", "port_name"), [(5, "netflow"), (9, "netflow"), (10, "ipfix")])
def test_softflowd_flood_detected(tmp_path: Path, flood: Path, version: int, port_name: str) -> None:
    with pipeline(tmp_path) as (harness, ports):
        check(harness, lambda: softflowd(flood, ports[port_name], version), PACKETS)


@pytest.mark.skipif(not shutil.which("pmacctd"), reason="pmacct not installed (scripts/setup.sh)")
def test_pmacct_sfprobe_flood_detected(tmp_path: Path, flood: Path) -> None:
    with pipeline(tmp_path) as (harness, ports):
        # 1 in 10 of 20 000 packets: ~2 000 samples; the sampling error of the total is ~2 %
        check(harness, lambda: pmacct_sflow(flood, ports["sflow"], 10, tmp_path), PACKETS)


@pytest.fixture(scope="module")
def carpet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NTP reflection flood spread over 198.18.0.1-200: 100 packets per address."""
    pool: list[bytes] = []
    for i in range(1, 201):
        pool += frames_for(VectorSpec("ntp_amplification", dst=f"198.18.0.{i}", sources=50, variety=8, seed=i))
    path = tmp_path_factory.mktemp("carpet") / "carpet.pcap"
    write_pcap(path, paced(pool, 10_000, PACKETS, T0))
    return path


@pytest.mark.skipif(not shutil.which("softflowd"), reason="softflowd not installed (scripts/setup.sh)")
def test_carpet_flood_over_a_prefix_is_one_incident(tmp_path: Path, carpet: Path) -> None:
    # ~100 packets per address (~1 000 pps at most in a window, under 1 200); the /24 is far over
    detector: dict[str, object] = {"pps_threshold": 10_000_000, "victim_pps_threshold": 1200, "dynamic": False,
                "bps_threshold": 10**12, "victim_bps_threshold": 10**12, "hold_down": 3.0}
    with pipeline(tmp_path, detector) as (harness, ports):
        sub = harness.subscriber(IncidentOpened, TrafficWindow)
        with closing(sub):
            softflowd(carpet, ports["netflow"], 9)
            done = time.time()
            opened: list[IncidentOpened] = []
            last = 0.0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and last < done + 1.0:
                m: object = sub.get(timeout=max(deadline - time.monotonic(), 0.1))
                if isinstance(m, IncidentOpened):
                    opened.append(m)
                elif isinstance(m, TrafficWindow):
                    last = m.t_start
    assert len(opened) == 1, [o.target_ips for o in opened]
    assert opened[0].target_ips == ["198.18.0.0/24"] and opened[0].extra["carpet_bombing"] is True


def fuzz_datagrams(count: int) -> list[bytes]:
    """Random bytes, and real datagrams (v5, v9, IPFIX, sFlow) with bytes changed or cut short. Their flows
    go outside the protected network (a mutated packet count must not open an incident of its own)."""
    rnd = random.Random(16)
    flows = [(f"198.51.100.{i}", "192.0.2.99", 1000 + i, 80, 6, 2, 3, 180) for i in range(1, 31)]
    seeds = [G.netflow_v5(flows, 10), G.netflow_v9([G.template_set(300, G.V4_FIELDS, False),
                                                    G.data_set(300, G.v4_records(flows))]),
             G.ipfix([G.template_set(301, G.V4_FIELDS, True), G.data_set(301, G.v4_records(flows))]),
             G.sflow_v5([(G.eth_ipv4_udp("198.51.100.1", "192.0.2.99", 1, 2, 30), 72)] * 5, 100)]
    out: list[bytes] = []
    for i in range(count):
        seed = bytearray(rnd.choice(seeds))
        if i % 3 == 0:
            out.append(bytes(seed[:4]) + rnd.randbytes(rnd.randrange(0, 400)))
            continue
        for _ in range(rnd.randrange(1, 6)):
            seed[rnd.randrange(len(seed))] = rnd.getrandbits(8)
        out.append(bytes(seed[: rnd.randrange(1, len(seed) + 1)]) if i % 4 == 0 else bytes(seed))
    return out


def paced_ok(harness: BusHarness, sent: int) -> bool:
    return bool(harness.counters("collector").get("datagrams", 0) >= sent * 0.9)


@pytest.mark.skipif(not shutil.which("softflowd"), reason="softflowd not installed (scripts/setup.sh)")
def test_datagram_fuzz_neither_crashes_nor_stalls_the_collector(tmp_path: Path, flood: Path) -> None:
    with pipeline(tmp_path) as (harness, ports):
        data = fuzz_datagrams(4000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i, d in enumerate(data):
                sock.sendto(d, ("127.0.0.1", list(ports.values())[i % 3]))
                if i % 200 == 0:  # loopback drops what a full socket buffer cannot take: keep pace
                    eventually(functools.partial(paced_ok, harness, i), 10)
        seen = [-1]

        def settled() -> bool:  # every fuzz datagram that got through is counted (heartbeats 0.2 s apart)
            n = harness.counters("collector").get("datagrams", 0)
            done, seen[0] = n == seen[0], n
            return done

        eventually(settled, 10, interval=0.5, message="fuzz read")
        assert harness.counters("collector").get("malformed", 0) > 500
        bad = harness.counters("collector")["malformed"]
        # a switch's interface counters (sFlow counter sample) show in the collector's counters (status)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            counters = G.if_counters_sample(7, 10**10, (123_456, 654_321), (1000, 2000), errors=(5, 0))
            sock.sendto(G.sflow_v5([], 1, extra=[counters]), ("127.0.0.1", ports["sflow"]))
        shown = lambda: harness.counters("collector").get("interfaces", {}).get("127.0.0.1", {})  # noqa: E731
        iface = eventually(lambda: shown().get("7"), 10)
        assert (iface["speed"], iface["in_octets"], iface["out_octets"], iface["in_errors"]) == (10**10, 123_456,
                                                                                               654_321, 5)
        # the same process (nothing restarts it here) still decodes a real export stream: the flood is
        # detected and counted, and no more datagrams are malformed than the fuzz's
        check(harness, lambda: softflowd(flood, ports["netflow"], 9), PACKETS, malformed=bad)
