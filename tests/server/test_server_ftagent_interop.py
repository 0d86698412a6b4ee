"""Interop with the real official agent: `ftagent` 1.9.65 from PyPI, installed into a throwaway virtual
environment at test time (proprietary: only installed and run, never copied), monitors namespace B's
veth while namespace A floods it, and reports to floodwatch's server (running in B, on its loopback).

What an operator then sees, through the server's own commands: the node online with the agent's version,
metrics, one incident with updates and a resolution, its capture (bytes and sha256 as stored), and a
command queued during the attack that the agent ran (the rule is in B's firewall) and acknowledged.

The agent writes its state to /var/lib/ftagent: it runs in a private mount namespace with a tmpfs on
/var/lib, so nothing of it lands on the host. Its own tcpdump children die with its process group.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fwserver_util import Backend, ServerProc, cli_inproc, pg_backend

from tests.conftest import require_netns
from tests.helpers import REPO, NetnsPair, eventually, netns_pair

VERSION = "1.9.65"
THRESHOLD = 200  # pps; the flood is far above 5x this (the agent then opens at once, no 90 s warm-up)
FLOOD_PPS = 3000
FLOOD_SECONDS = 20
BLOCKED = "203.0.113.77"  # the address the queued command blocks (documentation range, never used)
OFFLINE_MARKERS = ("NewConnectionError", "Temporary failure in name resolution", "Name or service not known",
                   "Network is unreachable", "ConnectTimeoutError", "Failed to establish a new connection",
                   "No route to host")

pytestmark = [pytest.mark.slow, pytest.mark.netns,
              pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed"),
              pytest.mark.skipif(shutil.which("mergecap") is None,
                                 reason="mergecap is not installed (the agent would try to install it itself)"),
              pytest.mark.skipif(shutil.which("iptables") is None, reason="iptables is not installed")]


@pytest.fixture(scope="module")
def ftagent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ftagent` installed from PyPI into a fresh venv; skipped only when PyPI cannot be reached."""
    require_netns()
    venv = tmp_path_factory.mktemp("ftagent") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                          f"ftagent=={VERSION}"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        if any(m in pip.stderr for m in OFFLINE_MARKERS):
            pytest.skip(f"PyPI is unreachable, cannot install ftagent=={VERSION}: {pip.stderr.strip()[-300:]}")
        raise AssertionError(f"pip install ftagent=={VERSION} failed:\n{pip.stderr[-3000:]}")
    return venv / "bin" / "ftagent"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Both stores. The server runs in namespace B, where the cluster's TCP port on the host's loopback
    cannot be reached: it connects through the cluster's Unix socket (a path, the same in every network
    namespace), with the cluster's local-socket authentication."""
    if request.param == "sqlite":
        return Backend()
    cluster = request.getfixturevalue("pg_cluster")
    backend = pg_backend(cluster, tmp_path)
    name = backend.url.rsplit("/", 1)[1]
    return Backend("postgresql", f"postgresql://{cluster.user}@/{name}?host={cluster.dir}&port={cluster.port}",
                   backend.password_file)


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    require_netns()
    with netns_pair(prefix="fwftq") as p:
        yield p


def agent_config(tmp: Path, port: int, uuid: str, key: str, iface: str) -> Path:
    """What an ftagent user changes to use floodwatch: api_base (plus the node's key and uuid)."""
    cfg = {"api_key": key, "node_uuid": uuid, "api_base": f"http://127.0.0.1:{port}/api/v1",
           "interface": iface, "pcap_enabled": True, "pcap_mode": "tcpdump", "pcap_dir": str(tmp / "pcaps"),
           "log_file": str(tmp / "ftagent-file.log"), "log_level": "INFO", "health_port": 0,
           "auto_update": False, "gre_mode": "disabled"}
    path = tmp / "ftagent.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


def start_agent(pair: NetnsPair, exe: Path, config: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """The agent in B, in a private mount namespace whose /var/lib is a tmpfs (its hard-coded state dir)."""
    argv = ["ip", "netns", "exec", pair.ns_b, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", 'mount -t tmpfs fwftagent /var/lib && exec "$@"', "ftagent",
            str(exe), "--config", str(config), "--no-update-check"]
    with open(tmp / "ftagent.log", "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HOME": str(tmp)})


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the agent's process group (it and its tcpdump children), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the agent if it hung, children that outlived it
    proc.wait(5)


def flood(pair: NetnsPair) -> subprocess.Popen[bytes]:
    return pair.popen(pair.ns_a, [sys.executable, "-m", "floodwatch.cli", "traffic", "send", "ntp_amplification",
                                  "--iface", pair.if_a, "--pps", str(FLOOD_PPS), "--duration", str(FLOOD_SECONDS),
                                  "--dst", pair.ip4_b, "--dst-mac", pair.mac_b, "--sources", "50"],
                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_official_agent_reports_everything_to_floodwatch(ftagent: Path, pair: NetnsPair,
                                                               tmp_path: Path, storage: Backend) -> None:
    srv = ServerProc(tmp_path, ["--rate-limit", "0"], wrap=["ip", "netns", "exec", pair.ns_b],
                     backend=storage).start()
    agent: subprocess.Popen[bytes] | None = None
    sender: subprocess.Popen[bytes] | None = None
    db = [*srv.store_args]
    try:
        node = srv.add_node("ft-node")
        subprocess.run([sys.executable, "-m", "floodwatch.server", "set-threshold", node.uuid, str(THRESHOLD), *db],
                       cwd=REPO, check=True, capture_output=True)
        agent = start_agent(pair, ftagent, agent_config(tmp_path, srv.port, node.uuid, node.key, pair.if_b), tmp_path)
        log = tmp_path / "ftagent.log"
        why = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731
        eventually(lambda: metrics(srv, node.uuid) >= 1, 40, message=f"first metrics from the agent\n{why()}")

        # a mitigation waiting for the next attack: the agent fetches its config when it opens an incident
        command = cli_inproc("queue-command", node.uuid, f"iptables -I INPUT -s {BLOCKED} -j DROP", *db)
        sender = flood(pair)
        [inc] = eventually(lambda: incidents(srv), 30, message=f"the incident opened\n{why()}")
        assert inc["status"] == "active" and inc["severity"] in ("high", "critical"), inc

        done = eventually(lambda: [i for i in incidents(srv) if i["status"] == "resolved" and i["pcap_stored"]],
                          FLOOD_SECONDS + 45, message=f"the incident resolved with its capture\n{why()}")
        [inc] = done
        assert len(incidents(srv)) == 1  # one incident, not one per request
        assert inc["updates"] >= 2 and inc["peak_pps"] > 5 * THRESHOLD and inc["ended_at"] is not None, inc
        kinds = [h["kind"] for h in cli_inproc("incident", "show", str(inc["incident_id"]), *db)["history"]]
        assert kinds[0] == "open" and kinds.count("update") >= 1 and kinds[-1] == "resolve", kinds
        check_capture(srv, inc, tmp_path)

        [cmd] = eventually(lambda: [c for c in cli_inproc("commands", node.uuid, *db) if c["status"] != "pending"],
                           20, message=f"the command acknowledged\n{why()}")
        assert cmd["id"] == command["command_id"] and cmd["status"] == "applied", cmd
        rules = pair.run(pair.ns_b, ["iptables", "-S", "INPUT"]).stdout
        assert f"-s {BLOCKED}/32 -j DROP" in rules, rules

        me = eventually(lambda: [n for n in cli_inproc("nodes", *db) if n["agent_version"] == VERSION], 40,
                        message=f"a heartbeat with the agent's version\n{why()}")
        assert me[0]["status"] == "online"
        assert metrics(srv, node.uuid) >= 3
        assert "Traceback" not in srv.log(), srv.log()[-3000:]
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait(5)
        if agent is not None:
            stop_group(agent)
        srv.stop()


def incidents(srv: ServerProc) -> list[dict[str, Any]]:
    return list(cli_inproc("incidents", *srv.store_args))


def metrics(srv: ServerProc, node_uuid: str) -> int:
    """Samples stored for the node (what the admin API's nodes/{node}/metrics lists)."""
    store = srv.open_store()
    try:
        node = store.find_node(node_uuid)
        assert node is not None
        return len(store.metrics(node["node_id"], -math.inf, 10_000))
    finally:
        store.close()


def check_capture(srv: ServerProc, inc: dict[str, Any], tmp_path: Path) -> None:
    """The stored capture: bytes and sha256 as recorded, a real pcap holding the flood (NTP, port 123)."""
    out = tmp_path / "fetched.pcap"
    subprocess.run([sys.executable, "-m", "floodwatch.server", "fetch-pcap", str(inc["incident_id"]), "--out",
                    str(out), *srv.store_args], cwd=REPO, check=True, capture_output=True)
    data = out.read_bytes()
    assert len(data) == inc["pcap_bytes"] and hashlib.sha256(data).hexdigest() == inc["pcap_sha256"]
    read = subprocess.run(["tcpdump", "-nn", "-r", str(out), "-c", "20", "udp src port 123"], capture_output=True,
                          text=True, timeout=30)
    assert len(re.findall(r"\.123 > ", read.stdout)) == 20, read.stdout + read.stderr
