"""The reporter actor (a real process on a real bus) against a fake API for what a real server won't do:
garbage answers, 200 with HTML, never answering, losing a response after storing the report."""

from __future__ import annotations

import contextlib
import json
import ssl
from pathlib import Path
from typing import Any

from floodwatch.messages import CommandReceived, ConfigReceived, IncidentUpdated
from tests.helpers import BusHarness
from tests.reporter.support import FakeApi, make_tls, reporter, reporter_settings, wait_for
from tests.reporter.test_reporter_logic import T0, incident, second

KEY = "secret-key-do-not-log-0123456789"


def test_reporter_garbage_config_is_logged_and_ignored(tmp_path: Path, harness: BusHarness) -> None:
    sub = harness.subscriber(ConfigReceived, CommandReceived)
    with contextlib.closing(sub), FakeApi() as api:
        html = {"Content-Type": "text/html"}
        js = {"Content-Type": "application/json"}
        api.canned["config"] = [
            (200, b"<html><body>Welcome to the portal</body></html>", html),
            (200, b"{not json", js),
            (200, b"[1, 2, 3]", js),
            (200, json.dumps({"pps_threshold": "lots", "ioc_patterns": [{"pattern": 42}]}).encode(), js),
            (200, b"\xff\xfe\x00garbage", {"Content-Type": "application/octet-stream"}),
        ]
        commands: list[dict[str, Any]] = [
            {"id": 11, "command": "iptables -I INPUT -s 198.18.0.9 -j DROP; rm -rf / #"},
            {"id": 12, "command": {"action": "block", "ip": "198.18.0.10", "extra": [1, None]}},
            {"id": "13", "command": "not acked: bad id"},
        ]
        api.config = {"node_id": 3, "pps_threshold": 50000, "ioc_patterns": ["deadbeef"],
                      "pending_commands": commands}
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1", config_interval=0.3)) as rp:
            cfg = sub.get(ConfigReceived, timeout=20)  # after five garbage answers, a good one
            assert cfg.pps_threshold == 50000 and cfg.node_id == 3
            assert cfg.ioc_patterns == [{"pattern": "deadbeef", "name": "deadbeef", "attack_family": ""}]
            got: dict[int, CommandReceived] = {}
            while len(got) < 2:
                msg = sub.get(CommandReceived, timeout=10)
                got[msg.command_id] = msg
            assert got[11].command == commands[0]["command"]  # passed on verbatim, as data only
            assert got[12].command == commands[1]["command"]
            assert got[11].source == "api"
            counters = rp.fresh_counters()
            assert counters["config_rejected"] >= 4 and counters["config_errors"] >= 5
            assert rp.proc is not None and rp.proc.poll() is None
            log = rp.log_text()
            assert "not a config (text/html" in log
            assert "NOT applied" in log and "pps_threshold" in log
            assert "pending_commands[2]" in log  # the command without a usable id is reported
            assert KEY not in log


def test_reporter_a_200_with_html_is_not_an_acknowledgement(tmp_path: Path, harness: BusHarness) -> None:
    with FakeApi() as api:
        page = (200, b"<html>Login required</html>", {"Content-Type": "text/html"})
        api.canned["incident"] = [page, page]
        api.canned["metrics"] = [page]
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1")) as rp:
            harness.publish(incident(key="html-1"))
            harness.publish(second(T0))
            rp.wait_drained()
            assert len(api.requests("incident")) == 3 and list(api.incidents) == ["html-1"]
            assert [m["recorded_at"] for m in api.metrics] == ["2026-05-28T20:26:40.250Z"]
            counters = rp.fresh_counters()
            assert counters["bad_answers"] >= 3 and counters["delivered"] >= 2
            assert "bad answer from the server" in rp.log_text()


def test_reporter_dead_letters_a_refused_report_and_goes_on(tmp_path: Path, harness: BusHarness) -> None:
    with FakeApi() as api:
        api.canned["commands/ack"] = [(400, b'{"error": "command_id: no such command"}',
                                       {"Content-Type": "application/json"})]
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1")) as rp:
            from floodwatch.messages import CommandFinished

            for cid in (1, 2):
                harness.publish(CommandFinished(command_id=cid, status="applied", error="", output="ok",
                                                executed_at=T0))
            rp.wait_drained()
            assert [a["command_id"] for a in api.acks] == [2]
            assert rp.fresh_counters()["dead_letters"] == 1
            assert "command_id: no such command" in rp.log_text()


def test_reporter_a_server_that_never_answers_blocks_nothing_else(tmp_path: Path, harness: BusHarness) -> None:
    with FakeApi() as api:
        api.hang = {"metrics", "config"}
        settings = reporter_settings(api.url, KEY, "node-1", outbox_max_metrics=400, request_timeout=2.0)
        with reporter(tmp_path, harness, settings) as rp:
            harness.publish(incident(key="hang-1"))
            wait_for(lambda: "hang-1" in api.incidents, message="incident delivered while metrics hang")
            rss0 = harness.heartbeats["reporter"].rss_bytes
            n = 3000
            for i in range(n):
                harness.publish(second(T0 + i, pps=i))
                if i % 500 == 0:
                    harness.publish(incident(IncidentUpdated, key="hang-1", seq=i // 500 + 1, peak_pps=i))
            harness.publish(incident(key="hang-2"))
            wait_for(lambda: "hang-2" in api.incidents, message="a later incident delivered too")
            wait_for(lambda: len([b for b in api.incident_bodies if b["incident_key"] == "hang-1"]) == 7)
            counters = wait_for(lambda: (c := rp.fresh_counters())["metrics_downsampled"] > 0 and c)
            assert counters["outbox_pending"] <= 400 + 2  # bounded by policy (+ a heartbeat, a batch)
            assert harness.heartbeats["reporter"].rss_bytes - rss0 < 40 * 1024 * 1024
            api.hang = set()  # the server comes back: everything queued arrives
            rp.wait_drained(40)
            assert sum(int(m.get("samples", 1)) for m in api.metrics) == n
            times = [m["recorded_at"] for m in api.metrics]
            assert times == sorted(times)
            assert api.metrics[-1]["pps"] == n - 1 and "downsampled" not in api.metrics[-1]
            assert max(int(m.get("peak_pps", m["pps"])) for m in api.metrics) == n - 1


def test_reporter_retry_after_pauses_every_stream(tmp_path: Path, harness: BusHarness) -> None:
    with FakeApi() as api:
        api.canned["incident"] = [(429, b'{"error": "rate limited"}', {"Retry-After": "2"})]
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1", heartbeat_interval=0.2,
                                                           config_interval=0.2)) as rp:
            harness.publish(incident(key="ra-1"))
            wait_for(lambda: len(api.requests("incident")) >= 2, message="the retried open")
            first, second_try = api.requests("incident")[:2]
            assert second_try.at - first.at >= 1.9
            quiet = [s for s in api.seen if first.at + 0.3 < s.at < first.at + 1.9]
            assert quiet == [], f"requests during the Retry-After pause: {[(s.method, s.path) for s in quiet]}"
            assert rp.fresh_counters()["throttled"] >= 1


def test_reporter_lost_response_and_sigkill_make_no_duplicate(tmp_path: Path, harness: BusHarness) -> None:
    """The server stores the open but its answer never arrives; the reporter is SIGKILLed meanwhile."""
    with FakeApi() as api:
        api.store_then_hang = {"incident"}
        settings = reporter_settings(api.url, KEY, "node-1", request_timeout=30.0)
        with reporter(tmp_path, harness, settings) as rp:
            harness.publish(incident(key="lost-1"))
            for seq in (1, 2):
                harness.publish(incident(IncidentUpdated, key="lost-1", seq=seq, peak_pps=1000 * seq))
            wait_for(lambda: "lost-1" in api.incidents, message="open stored by the server")
            wait_for(lambda: rp.fresh_counters()["outbox_pending"] >= 3)
            rp.kill()
            api.store_then_hang = set()
            rp.start()
            rp.wait_drained()
        bodies = [b for b in api.incident_bodies if b["incident_key"] == "lost-1"]
        assert len(api.incidents) == 1
        assert [b.get("incident_id") for b in bodies] == [None, None, 1, 1]  # open twice (same key), 2 updates
        assert [b["peak_pps"] for b in bodies[2:]] == [1000, 2000]


def test_reporter_tls_is_verified_and_a_private_ca_can_be_trusted(tmp_path: Path, harness: BusHarness) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with FakeApi(ssl_context=ctx) as api:
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1"), name="noca") as rp:
            harness.publish(incident(key="tls-1"))
            wait_for(lambda: rp.fresh_counters()["retries"] >= 2, message="refused: unknown CA")
            assert "certificate verify failed" in rp.log_text().lower() and not api.incidents
            assert rp.fresh_counters()["outbox_pending"] >= 1
        settings = reporter_settings(api.url, KEY, "node-1", ca_bundle=str(ca))
        with reporter(tmp_path, harness, settings, name="withca") as rp:
            rp.wait_drained()  # the same outbox: the incident queued by the first process arrives
            assert list(api.incidents) == ["tls-1"]
            assert "TLS VERIFICATION IS OFF" not in rp.log_text()
        settings = reporter_settings(api.url, KEY, "node-1", tls_verify=False)
        with reporter(tmp_path, harness, settings, name="off") as rp:  # only ever loudly
            harness.publish(incident(key="tls-2"))
            rp.wait_drained()
            assert "TLS VERIFICATION IS OFF" in rp.log_text() and "tls-2" in api.incidents


def test_reporter_an_update_without_a_delivered_open_is_not_orphaned(tmp_path: Path, harness: BusHarness) -> None:
    """The open was refused (dead letter): the next update first opens by key, then updates by id."""
    with FakeApi() as api:
        api.canned["incident"] = [(400, b'{"error": "severity: must be one of ..."}',
                                   {"Content-Type": "application/json"})]
        with reporter(tmp_path, harness, reporter_settings(api.url, KEY, "node-1")) as rp:
            harness.publish(incident(key="orphan-1"))
            harness.publish(incident(IncidentUpdated, key="orphan-1", seq=1, peak_pps=777))
            rp.wait_drained()
            bodies = [r.body for r in api.requests("incident")]
            assert [b.get("incident_id") for b in bodies] == [None, None, 1]
            assert bodies[2]["peak_pps"] == 777 and list(api.incidents) == ["orphan-1"]
            assert rp.fresh_counters()["dead_letters"] == 1
