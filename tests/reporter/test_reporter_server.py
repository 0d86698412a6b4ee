"""The reporter actor against the real embedded server: real processes, real HTTP, real SQLite."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from floodwatch.messages import (
    CommandFinished,
    CommandReceived,
    ConfigReceived,
    IncidentResolved,
    IncidentUpdated,
    PcapSaved,
    ReporterDrained,
)
from floodwatch.reporter.mapping import iso
from tests.helpers import (
    PYTHON,
    REPO,
    BusHarness,
    base_config,
    eventually,
    start_supervisor,
    stop_process,
    tcp_endpoints,
    write_config,
)
from tests.reporter.support import ReporterProc, ServerProc, reporter, reporter_settings, server, wait_for
from tests.reporter.test_reporter_logic import T0, incident, second

# metric samples an hour old: recent enough for the server's retention sweep (which drops old ones)
M0 = float(int(time.time()) - 3600) + 0.25


def _publish_seconds(harness: BusHarness, start: int, stop: int) -> None:
    for i in range(start, stop):
        harness.publish(second(M0 + i, pps=1000 + i))


def _peaks(srv: ServerProc, incident_id: int) -> list[tuple[str, str, int]]:
    return [(h["kind"], h["body"].get("status", ""), h["body"].get("peak_pps", -1))
            for h in srv.history(incident_id)]


@pytest.mark.slow
def retried(rp: ReporterProc, at_least: int) -> bool:
    return bool(rp.fresh_counters()["retries"] >= at_least)


def test_reporter_server_outage_loses_nothing(tmp_path: Path, harness: BusHarness) -> None:
    """The server goes away mid-attack and comes back: every report arrives once, in order, as recorded."""
    with server(tmp_path) as srv:
        uuid, key = srv.add_node()
        srv.start()
        with reporter(tmp_path, harness, reporter_settings(srv.url, key, uuid)) as rp:
            harness.publish(incident(key="out-1", peak_pps=100))
            _publish_seconds(harness, 0, 20)
            harness.publish(incident(IncidentUpdated, key="out-1", seq=1, peak_pps=101))
            wait_for(lambda: len(srv.incidents()) == 1, message="first incident stored")
            rp.wait_drained()
            srv.stop()  # the outage: the attack goes on, reports pile up
            retries0 = rp.fresh_counters()["retries"]
            for step in range(8):
                _publish_seconds(harness, 20 + step * 25, 45 + step * 25)
                harness.publish(incident(IncidentUpdated, key="out-1", seq=2 + step, peak_pps=102 + step))
                if step == 3:
                    harness.publish(incident(key="out-2", peak_pps=500))
                if step == 5:
                    harness.publish(incident(IncidentUpdated, key="out-2", seq=1, peak_pps=501))
                r = rp.fresh_counters()["retries"]
                wait_for(functools.partial(retried, rp, r + 3), message="the reporter retries")
            harness.publish(incident(IncidentResolved, key="out-1", seq=10, status="resolved", ended_at=T0 + 220,
                                     peak_pps=110))
            counters = rp.fresh_counters()
            assert counters["retries"] >= retries0 + 24 and counters["outbox_pending"] >= 200 + 12
            assert rp.health().startswith("api: unreachable")
            srv.start()
            rp.wait_drained(60)
            assert rp.health() == "ok"
        incidents = srv.incidents()
        assert [i["incident_key"] for i in incidents] == ["out-1", "out-2"]  # none twice
        one, two = incidents
        assert one["status"] == "resolved" and one["ended_at"] == iso(T0 + 220)
        hist = _peaks(srv, one["incident_id"])
        assert [h[2] for h in hist] == [100, *range(101, 111)] and hist[-1][1] == "resolved"  # in order
        assert [h[2] for h in _peaks(srv, two["incident_id"])] == [500, 501]
        metrics = srv.metrics()
        assert [m["recorded_at"] for m in metrics] == [iso(M0 + i) for i in range(220)]  # original times, once
        assert [m["pps"] for m in metrics] == [1000 + i for i in range(220)]


@pytest.mark.slow
def test_reporter_server_sigkill_and_rate_limit(tmp_path: Path, harness: BusHarness) -> None:
    """A backlog drained through a 429 rate limit while the reporter is SIGKILLed again and again."""
    with server(tmp_path, "--rate-limit", "20", "--rate-burst", "4") as srv:
        uuid, key = srv.add_node()
        srv.start()
        settings = reporter_settings(srv.url, key, uuid, metrics_batch=50)
        with reporter(tmp_path, harness, settings) as rp:
            keys = [f"kill-{n}" for n in range(12)]
            for n, k in enumerate(keys):
                harness.publish(incident(key=k, peak_pps=n * 10))
                harness.publish(incident(IncidentUpdated, key=k, seq=1, peak_pps=n * 10 + 1))
                harness.publish(incident(IncidentResolved, key=k, seq=2, status="resolved", ended_at=T0 + 9,
                                         peak_pps=n * 10 + 2))
            _publish_seconds(harness, 0, 300)
            wait_for(lambda: rp.fresh_counters()["outbox_pending"] >= 30, message="a backlog queued")
            for _ in range(3):
                wait_for(lambda: rp.fresh_counters()["delivered"] >= 3, message="delivering")
                rp.kill()  # whatever was in flight is lost with the process, not with the outbox
                rp.start()
            rp.wait_drained(60)
            assert rp.fresh_counters()["throttled"] >= 1 or "429" in rp.log_text()
        incidents = srv.incidents()
        assert sorted(i["incident_key"] for i in incidents) == sorted(keys)  # each exactly once
        for inc in incidents:
            n = int(inc["incident_key"].split("-")[1])
            peaks = [h["body"]["peak_pps"] for h in srv.history(inc["incident_id"])]
            assert peaks == sorted(peaks) and set(peaks) == {n * 10, n * 10 + 1, n * 10 + 2}, peaks
            assert inc["status"] == "resolved"
        times = [m["recorded_at"] for m in srv.metrics()]
        assert set(times) == {iso(M0 + i) for i in range(300)}  # nothing lost (at least once)
        assert len(times) - 300 <= 3 * 50  # a repeat is at most one in-flight batch per kill


def test_reporter_server_commands_acks_and_pcap(tmp_path: Path, harness: BusHarness) -> None:
    sub = harness.subscriber(CommandReceived, ConfigReceived)
    with contextlib.closing(sub), server(tmp_path) as srv:
        uuid, key = srv.add_node()
        hostile = "iptables -I INPUT -s 198.18.0.9 -j DROP; touch /tmp/pwned-by-reporter-test"
        cid = srv.cli("queue-command", uuid, hostile)["command_id"]
        srv.start()
        (tmp_path / "state" / "pcaps").mkdir(parents=True)
        pcap = tmp_path / "state" / "pcaps" / "capture.pcap"
        pcap.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        with reporter(tmp_path, harness, reporter_settings(srv.url, key, uuid, config_interval=0.5)) as rp:
            msg = sub.get(CommandReceived, timeout=20)
            assert (msg.command_id, msg.command, msg.source) == (cid, hostile, "api")  # data, never run
            assert not Path("/tmp/pwned-by-reporter-test").exists()
            harness.publish(CommandFinished(command_id=cid, status="rejected", error="not a mitigation",
                                            output="", executed_at=T0))
            harness.publish(incident(key="pcap-1"))
            outside = PcapSaved(incident_key="pcap-1", path="/etc/passwd", packets=0, bytes=1, linktype=1,
                                sha256="", sample_rate=1, truncated=False)
            harness.publish(outside)  # refused: only the recorder's directory is uploaded
            harness.publish(PcapSaved(incident_key="pcap-1", path=str(pcap), packets=0, bytes=24, linktype=1,
                                      sha256="", sample_rate=1, truncated=False))
            rp.wait_drained()
            (cmd,) = srv.cli("commands", uuid)
            assert cmd["status"] == "rejected" and cmd["error"] == "not a mitigation"
            (inc,) = srv.incidents()
            assert inc["pcap_stored"] and inc["pcap_bytes"] == 24
            assert rp.fresh_counters()["bad_messages"] == 1 and "outside the recorder's directory" in rp.log_text()
            sub.drain(0.1)
            polls = rp.fresh_counters()["config_polls"]
            wait_for(lambda: rp.fresh_counters()["config_polls"] >= polls + 2)
            assert not [m for m in sub.drain(0.3) if isinstance(m, CommandReceived)]  # acked: never again


@pytest.mark.slow
def test_reporter_server_401_shows_in_status(tmp_path: Path) -> None:
    """A wrong key: the supervisor's `floodwatch status` says so; the log says so without the key."""
    with server(tmp_path) as srv:
        uuid, _ = srv.add_node()
        srv.start()
        wrong = "fwk_this-is-not-the-right-key-0123456789"
        cfg = base_config(tmp_path, tcp_endpoints(), supervisor={"actors": ["reporter"], "critical": []},
                          reporter=reporter_settings(srv.url, wrong, uuid))
        path = write_config(tmp_path / "sup.toml", cfg)
        sup = start_supervisor(path, tmp_path / "sup.log")
        try:
            def status_text() -> str:
                out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "status", "--config", str(path)], cwd=REPO,
                                     capture_output=True, text=True, timeout=20)
                return out.stdout if "401 unauthorized" in out.stdout else ""

            text = eventually(status_text, 30, interval=0.3, message="401 in floodwatch status")
            assert "api: 401 unauthorized (check api key / node uuid)" in text
            log = (tmp_path / "sup.log").read_text()
            assert "401 unauthorized" in log and wrong not in log and wrong not in text
        finally:
            stop_process(sup, 20)
        assert os.path.exists(srv.db)


def test_reporter_server_uses_the_embedded_servers_local_node(tmp_path: Path, harness: BusHarness) -> None:
    """No key configured: reports wait in the outbox until the embedded server's credentials appear."""
    with server(tmp_path) as srv:
        uuid, key = srv.add_node("local")
        srv.start()
        with reporter(tmp_path, harness, reporter_settings(srv.url, "", "")) as rp:
            harness.publish(incident(key="local-1"))
            wait_for(lambda: rp.fresh_counters()["outbox_pending"] >= 1 and "not configured" in rp.health())
            creds = tmp_path / "state" / "server-local-node.json"
            fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"node_uuid": uuid, "api_key": key, "name": "local"}, f)
            rp.wait_drained()
            assert [i["incident_key"] for i in srv.incidents()] == ["local-1"]
            assert key not in rp.log_text()


def test_reporter_sends_an_http_floods_details_and_the_server_keeps_them(tmp_path: Path, harness: BusHarness) -> None:
    """The weblog's details (extra) travel as named fields and are in the stored incident's history."""
    extra = {"source": "weblog", "site": "shop", "top_paths": [{"path": "/login", "count": 900}],
             "top_agents": [{"agent": "curl/8.5", "count": 880}], "status_mix": {"2xx": 12.5, "4xx": 87.5},
             "mitigation": ["iptables -I INPUT -s 198.18.0.9 -j DROP"], "requests": 1000}
    with server(tmp_path) as srv:
        uuid, key = srv.add_node("edge-1")
        srv.start()
        with reporter(tmp_path, harness, reporter_settings(srv.url, key, uuid)) as rp:
            harness.publish(incident(key="web-1", attack_family="http_flood", attack_subtype="login_flood",
                                     extra=extra))
            rp.wait_drained()
            (stored,) = srv.incidents()
            assert stored["attack_family"] == "http_flood" and stored["attack_subtype"] == "login_flood"
            body = srv.history(stored["incident_id"])[0]["body"]
    assert body["http_site"] == "shop"
    assert body["http_top_paths"] == [{"path": "/login", "count": 900}]
    assert body["http_top_agents"] == [{"agent": "curl/8.5", "count": 880}]
    assert body["http_status_mix"] == {"2xx": 12.5, "4xx": 87.5}
    assert body["mitigation_proposals"] == ["iptables -I INPUT -s 198.18.0.9 -j DROP"]
    assert "requests" not in body  # only the named fields, not the whole extra


def _drained(sub: Any, events: int, timeout: float) -> ReporterDrained:
    """The first reporter.drained that covers `events` incident events."""
    deadline = time.monotonic() + timeout
    while True:
        got = sub.get(ReporterDrained, timeout=max(0.1, deadline - time.monotonic()))
        if got.incident_events >= events:
            return got  # type: ignore[no-any-return]


@pytest.mark.slow
def test_reporter_drained_comes_only_once_the_server_holds_the_reports(tmp_path: Path, harness: BusHarness) -> None:
    """reporter.drained (what `floodwatch analyze` waits for) counts the events the reporter received,
    and comes only when all of them are at the server: not while the server is away."""
    with server(tmp_path) as srv:
        uuid, key = srv.add_node()
        srv.start()
        with reporter(tmp_path, harness, reporter_settings(srv.url, key, uuid)) as rp:
            sub = harness.subscriber(ReporterDrained)
            harness.wait_subscribed(ReporterDrained.TOPIC)
            harness.publish(incident(key="dr-1", peak_pps=100))
            assert _drained(sub, 1, 20).incident_events == 1
            [inc] = srv.incidents()
            assert inc["incident_key"] == "dr-1" and inc["peak_pps"] == 100
            srv.stop()
            retries = rp.fresh_counters()["retries"]
            harness.publish(incident(IncidentResolved, key="dr-1", seq=1, status="resolved", ended_at=T0 + 9))
            eventually(lambda: rp.fresh_counters()["retries"] > retries, 20, message="a failed delivery")
            assert not [m for m in sub.drain() if isinstance(m, ReporterDrained) and m.incident_events >= 2]
            srv.start()
            assert _drained(sub, 2, 30).incident_events == 2
            [inc] = srv.incidents()
            assert inc["status"] == "resolved"
