"""The agent's /metrics (served by the API server's actor, or by a metrics actor of its own) and its
embedded server's, scraped by the real Prometheus: the whole agent under `floodwatch run` in a network
namespace, real traffic into it, Prometheus on that namespace's loopback (where both endpoints answer
without a token)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from floodwatch.config import load_config
from tests.conftest import require_netns
from tests.helpers import (
    PYTHON,
    REPO,
    NetnsPair,
    base_config,
    eventually,
    ipc_endpoints,
    netns_pair,
    stop_process,
    try_status,
    write_config,
)
from tests.prom_util import Prometheus, Target, require_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.netns]
ACTORS = ["apiserver", "reporter", "executor", "detector", "recorder", "aggregator", "capture"]
API, METRICS, PROM = 18787, 19108, 19090  # the namespace's own loopback: nothing else listens there


@pytest.fixture(params=[True, False], ids=["in_apiserver", "metrics_actor"])
def scraped(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[NetnsPair, Prometheus, Path]]:
    require_netns()
    require_prometheus()
    with netns_pair("fwprm") as pair:
        cfg = write_config(tmp_path / "floodwatch.toml", base_config(
            tmp_path, ipc_endpoints(tmp_path / "run"),
            supervisor={"heartbeat_interval": 0.5, "heartbeat_timeout": 5.0},
            capture={"interfaces": [pair.if_b]},
            detector={"pps_threshold": 1_000_000, "dynamic": False},  # traffic, not an attack
            apiserver={"listen": f"127.0.0.1:{API}"},
            reporter={"url": f"http://127.0.0.1:{API}/api/v1/agent", "heartbeat_interval": 1.0},
            executor={"argv_prefix": ["ip", "netns", "exec", pair.ns_b]},
            metrics={"listen": f"127.0.0.1:{METRICS}", "in_apiserver": request.param}))
        log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - handed to the child
        agent = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, PYTHON, "-m", "floodwatch.cli", "run",
                                  "--config", str(cfg)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        prom = Prometheus([Target("agent", f"127.0.0.1:{METRICS}"), Target("server", f"127.0.0.1:{API}")], PROM,
                          wrap=["ip", "netns", "exec", pair.ns_b])
        try:
            prom.start()
            yield pair, prom, cfg
        finally:
            prom.stop()
            stop_process(agent, 60)
            if os.environ.get("FLOODWATCH_TEST_LOGS"):
                print((tmp_path / "agent.log").read_text(errors="replace")[-20000:])


def test_prometheus_scrapes_every_actor_and_counts_traffic(scraped: tuple[NetnsPair, Prometheus, Path]) -> None:
    pair, prom, cfg = scraped
    own = not load_config(cfg).metrics_in_apiserver()  # [metrics] in_apiserver = false: an actor of its own
    actors = ACTORS + ["metrics"] * own
    eventually(lambda: prom.value("count(floodwatch_actor_up == 1)") == len(actors), 60, interval=0.5,
               message="every actor up, as Prometheus sees it")
    scrapes = "floodwatch_metrics_scrapes_total" if own else "floodwatch_apiserver_metrics_scrapes_total"
    eventually(lambda: (prom.value(scrapes) or 0) >= 1, 20, interval=0.5, message="the scrapes are counted")
    assert prom.value('floodwatch_actor_up{actor="metrics"}') == (1 if own else None)
    assert prom.value('up{job="agent"}') == 1 and prom.value('up{job="server"}') == 1
    assert prom.value("floodwatch_supervisor_up") == 1
    assert prom.value('floodwatch_actor_state{actor="capture",state="running"}') == 1
    assert prom.value('floodwatch_actor_restarts_total{actor="capture"}') == 0
    age = prom.value('floodwatch_actor_last_heartbeat_age_seconds{actor="detector"}')
    assert age is not None and 0 <= age < 5
    assert prom.value("floodwatch_server_nodes{status=\"online\"}") == 1  # the embedded server's own node
    def records() -> tuple[float] | None:  # a tuple: 0 records is a value, not "not yet"
        v = prom.value("floodwatch_capture_records_total")
        return None if v is None else (v,)

    found = eventually(records, 20, interval=0.5, message="capture's records scraped")
    assert found is not None
    before = found[0]

    # 3,000 packets at half the default records budget (2,000/s): every one handed over, none sampled away
    pair.run(pair.ns_a, [PYTHON, "-m", "floodwatch.cli", "traffic", "send", "udp_flood", "--iface", pair.if_a,
                         "--dst", pair.ip4_b, "--dst-mac", pair.mac_b, "--pps", "1000", "--duration", "3"],
             timeout=60, cwd=REPO)
    eventually(lambda: (prom.value("floodwatch_capture_records_total") or 0) >= before + 2500, 30, interval=0.5,
               message="capture's records counter grew by the packets sent")
    eventually(lambda: (prom.value("floodwatch_aggregator_records_total") or 0) >= 2500, 30, interval=0.5,
               message="the aggregator counted them too")
    assert prom.metric_type("floodwatch_capture_records_total") == "counter"
    assert prom.metric_type("floodwatch_reporter_outbox_pending") == "gauge"
    assert prom.metric_type("floodwatch_capture_sample_rate") == "gauge"

    pid = try_status(cfg)["capture"]["pid"]
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: prom.value('floodwatch_actor_restarts_total{actor="capture"}') == 1, 30, interval=0.5,
               message="the restart is counted")
    eventually(lambda: prom.value('floodwatch_actor_up{actor="capture"}') == 1, 30, interval=0.5)
