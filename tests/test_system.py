"""The whole agent as a user runs it: the supervisor and every actor, real traffic between network
namespaces, the embedded API server, the reporter's outbox, the recorder's files."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import require_netns
from tests.helpers import (
    PYTHON,
    REPO,
    NetnsPair,
    base_config,
    eventually,
    ipc_endpoints,
    netns_pair,
    pid_alive,
    stop_process,
    try_status,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.netns]
ACTORS = ["apiserver", "reporter", "executor", "detector", "recorder", "aggregator", "capture"]


class Agent:
    def __init__(self, tmp: Path, pair: NetnsPair) -> None:
        self.tmp, self.pair = tmp, pair
        self.state = tmp / "state"
        port = 18787
        self.cfg = base_config(
            tmp, ipc_endpoints(tmp / "run"),
            supervisor={"heartbeat_interval": 0.2, "heartbeat_timeout": 5.0, "stop_timeout": 5.0},
            capture={"interfaces": [pair.if_b]},
            detector={"pps_threshold": 2000, "dynamic": False, "hold_down": 2.0, "cooldown": 2.0},
            apiserver={"listen": f"127.0.0.1:{port}"},
            reporter={"url": f"http://127.0.0.1:{port}/api/v1/agent", "heartbeat_interval": 1.0,
                      "config_interval": 1.0, "backoff_initial": 0.2, "backoff_max": 1.0},
            executor={"argv_prefix": ["ip", "netns", "exec", pair.ns_b]},
        )
        self.config = write_config(tmp / "floodwatch.toml", self.cfg)
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.ns_b, PYTHON, "-m", "floodwatch.cli", "run", "--config",
             str(self.config)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        return try_status(self.config)

    def all_running(self) -> dict[str, Any]:
        st = self.status()
        return st if st and all(st.get(a, {}).get("state") == "running" for a in ACTORS) else {}

    def server(self, *args: str) -> Any:
        out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "server", *args, "--db",
                              str(self.state / "server.db"), "--json"], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def flood(self, vector: str, pps: int, seconds: float, *extra: str) -> None:
        self.pair.run(self.pair.ns_a, [PYTHON, "-m", "floodwatch.cli", "traffic", "send", vector, "--iface",
                                       self.pair.if_a, "--dst", self.pair.ip4_b, "--dst-mac", self.pair.mac_b,
                                       "--pps", str(pps), "--duration", str(seconds), *extra], timeout=120)


A = TypeVar("A", bound=Agent)


@contextmanager
def agent_running(a: A) -> Iterator[A]:
    """Start the agent, wait for every actor, stop it (its log printed with FLOODWATCH_TEST_LOGS=1)."""
    a.start()
    try:
        eventually(a.all_running, 90, interval=0.2, message="every actor running")
        yield a
    finally:
        if a.proc is not None:
            stop_process(a.proc, 60)
        if os.environ.get("FLOODWATCH_TEST_LOGS"):
            print(a.log.read_text(errors="replace")[-20000:])


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    require_netns()
    with netns_pair("fwsys") as pair, agent_running(Agent(tmp_path, pair)) as a:
        yield a


def test_udp_flood_is_detected_reported_with_its_capture(agent: Agent) -> None:
    agent.flood("udp_flood", 20000, 3.0)

    def incident() -> dict[str, Any] | None:
        found = [i for i in agent.server("incidents") if i.get("attack_family") == "udp_flood"]
        return found[0] if found and found[0].get("status") == "resolved" and found[0].get("pcap_stored") \
            else None

    inc = eventually(incident, 60, interval=0.5, message="a resolved udp_flood with its pcap on the server")
    assert inc["peak_pps"] >= 2000
    assert float(inc["protocol_breakdown"]["udp"]) > 90
    assert len(agent.server("incidents")) == 1
    st = agent.status()
    assert all(st[a]["restarts"] == 0 for a in ACTORS), {a: st[a]["restarts"] for a in ACTORS}
    # the reporter's counters arrive with its heartbeats (every 5 s): the outbox empties by the next one
    eventually(lambda: agent.status()["reporter"]["counters"].get("outbox_pending", 0) == 0, 15, interval=0.5,
               message="the reporter's outbox empty in its heartbeat")


def restarted(agent: Agent, name: str, old_pid: int) -> bool:
    pid = agent.status().get(name, {}).get("pid")
    return bool(pid) and pid != old_pid


def running(agent: Agent, name: str) -> dict[str, Any] | None:
    st = agent.status()
    return st if st[name]["state"] == "running" else None


def test_kill_9_of_each_real_actor_is_restarted_within_a_second(agent: Agent) -> None:
    for name in ACTORS:
        old = agent.status()[name]["pid"]
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        eventually(functools.partial(restarted, agent, name, old), 1.0, interval=0.02, message=f"{name} restarted")
        assert time.monotonic() - t0 < 1.0
        assert not pid_alive(old)
        st = eventually(functools.partial(running, agent, name), 30)
        assert st[name]["restarts"] == 1
    eventually(agent.all_running, 30)
