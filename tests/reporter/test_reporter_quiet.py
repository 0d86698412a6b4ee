"""The metrics cadence of a quiet agent: with no incident open, the per-second samples wait up to
`metrics_interval` and go together (published dialect: one array; flowtriq: merged into one sample per
interval, like Flowtriq's own agent); an incident that opens sends what waited at once, and its seconds
go one by one as they come. No sample is lost or sent twice either way."""

from __future__ import annotations

import time
from pathlib import Path

from floodwatch.messages import IncidentResolved
from floodwatch.reporter.mapping import iso
from tests.helpers import BusHarness
from tests.reporter.support import FakeApi, reporter, reporter_settings, server, wait_for
from tests.reporter.test_reporter_logic import T0, incident, second

KEY = "secret-key-do-not-log-0123456789"
M0 = float(int(time.time()) - 3600) + 0.25  # recent enough for the server's retention sweep


def test_quiet_samples_wait_and_an_opening_incident_sends_them(tmp_path: Path, harness: BusHarness) -> None:
    with FakeApi() as api:
        settings = reporter_settings(api.url, KEY, "node-1", metrics_interval=120.0)
        with reporter(tmp_path, harness, settings) as rp:
            for i in range(3):
                harness.publish(second(T0 + i, pps=100 + i))
            wait_for(lambda: rp.fresh_counters()["metrics_held"] == 3, message="three samples held")
            assert api.metrics == [] and rp.counters()["outbox_pending"] == 0  # held by design, not pending
            harness.publish(incident(key="q-1"))
            wait_for(lambda: len(api.metrics) == 3, message="the waiting samples sent when the incident opened")
            assert [m["pps"] for m in api.metrics] == [100, 101, 102]
            assert len(api.requests("metrics")) == 1  # together, as one array
            harness.publish(second(T0 + 3, pps=103))  # during the incident: at once, on its own
            wait_for(lambda: len(api.metrics) == 4, message="a sample during the incident")
            assert len(api.requests("metrics")) == 2
            harness.publish(incident(IncidentResolved, key="q-1", seq=1, status="resolved", ended_at=T0 + 4))
            wait_for(lambda: any(b.get("status") == "resolved" for b in api.incident_bodies),
                     message="the resolution delivered")
            harness.publish(second(T0 + 4, pps=104))  # quiet again: it waits
            wait_for(lambda: rp.fresh_counters()["metrics_held"] == 1, message="the quiet sample held")
            assert len(api.metrics) == 4


def test_flowtriq_quiet_samples_merge_one_per_interval(tmp_path: Path, harness: BusHarness) -> None:
    with server(tmp_path) as srv:
        uuid, key = srv.add_node()
        srv.start()
        settings = reporter_settings(srv.url, key, uuid, dialect="flowtriq", metrics_interval=2.0)
        with reporter(tmp_path, harness, settings) as rp:
            for i, pps in enumerate((1000, 1002, 1004, 1006)):
                harness.publish(second(M0 + i, pps=pps))
            wait_for(lambda: (c := rp.fresh_counters())["delivered"] >= 2 and c["metrics_held"] == 0
                     and c["outbox_pending"] == 0, message="the samples delivered")
    metrics = srv.metrics()
    assert [(m["recorded_at"], m["pps"]) for m in metrics] == [(iso(M0), 1001), (iso(M0 + 2), 1005)]


def test_a_burst_of_seconds_is_queued_whole_and_survives_a_kill(tmp_path: Path, harness: BusHarness) -> None:
    """A silent link's seconds come in one go every few seconds (capture's idle_interval): the reporter
    queues what arrives together in one transaction. Every sample of a burst is held durably (a SIGKILL
    then a restart loses none), and an incident opening inside a burst still sends them all at once."""
    with FakeApi() as api:
        settings = reporter_settings(api.url, KEY, "node-1", metrics_interval=120.0)
        with reporter(tmp_path, harness, settings) as rp:
            for i in range(40):
                harness.publish(second(T0 + i, pps=100 + i))
            wait_for(lambda: rp.fresh_counters()["metrics_held"] == 40, message="forty samples held")
            rp.kill()
            rp.start()
            wait_for(lambda: rp.fresh_counters()["metrics_held"] == 40, message="still held after the kill")
            for i in range(40, 45):
                harness.publish(second(T0 + i, pps=100 + i))
            harness.publish(incident(key="burst-1"))
            for i in range(45, 50):
                harness.publish(second(T0 + i, pps=100 + i))
            wait_for(lambda: len(api.metrics) == 50 and "burst-1" in api.incidents,
                     message="every sample and the incident delivered")
    assert [m["pps"] for m in api.metrics] == list(range(100, 150))
