"""The reporter in the `flowtriq` dialect (part C) against the real server, across a server restart:
an incident, its updates, its resolution and a capture (large enough to go in chunks) arrive exactly once,
in order, and every metric sample once."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

import pytest

from floodwatch.messages import IncidentResolved, IncidentUpdated, PcapSaved
from floodwatch.reporter import dialect
from floodwatch.reporter.mapping import iso
from tests.helpers import BusHarness
from tests.reporter.support import reporter, reporter_settings, server, wait_for
from tests.reporter.test_reporter_logic import T0, incident, second

M0 = float(int(time.time()) - 3600) + 0.25


def test_reporter_dialect_paths_and_bodies() -> None:
    body = {"incident_key": "k", "status": "resolved", "started_at": iso(T0), "ended_at": iso(T0 + 42.5)}
    assert dialect.incident_request("flowtriq", "open", body, None) == ("incidents", body)
    assert dialect.incident_request("flowtriq", "update", body, "u-1")[0] == "incidents/u-1"
    path, resolved = dialect.incident_request("flowtriq", "resolve", body, "u-1")
    assert path == "incidents/u-1/resolve" and resolved["duration_seconds"] == 42.5
    assert dialect.incident_request("published", "update", body, 7) == ("incident", {**body, "incident_id": 7})
    assert dialect.ref_of("flowtriq", {"uuid": "a-b_c"}) == "a-b_c"
    assert dialect.ref_of("flowtriq", {"uuid": "../x"}) is None and dialect.ref_of("flowtriq", {"id": 1}) is None
    assert dialect.ref_of("published", {"incident_id": 3}) == 3 and dialect.ref_of("published", {"uuid": "x"}) is None
    assert dialect.heartbeat("flowtriq", {"agent_version": "1.0"})["version"] == "1.0"
    assert dialect.metrics_batch("flowtriq", 300) == 1 and dialect.metrics_batch("published", 300) == 300
    assert dialect.upload_id("k", 5) == dialect.upload_id("k", 5) != dialect.upload_id("k", 6)


@pytest.mark.slow
def test_reporter_flowtriq_dialect_exactly_once_across_a_server_restart(tmp_path: Path, harness: BusHarness) -> None:
    pcaps = tmp_path / "state" / "pcaps"
    pcaps.mkdir(parents=True)
    capture = pcaps / "ft-1.pcap"
    content = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000") + secrets.token_bytes(
        2 * dialect.CHUNK_BYTES + 4321)  # three chunks
    capture.write_bytes(content)
    with server(tmp_path) as srv:
        uuid, key = srv.add_node()
        srv.start()
        with reporter(tmp_path, harness, reporter_settings(srv.url, key, uuid, dialect="flowtriq")) as rp:
            harness.publish(incident(key="ft-1", peak_pps=100))
            for i in range(10):
                harness.publish(second(M0 + i, pps=1000 + i))
            harness.publish(incident(IncidentUpdated, key="ft-1", seq=1, peak_pps=101))
            wait_for(lambda: len(srv.incidents()) == 1, message="the incident opened")
            rp.wait_drained()
            srv.stop()  # the restart: reports pile up meanwhile
            for step in range(2, 5):
                harness.publish(incident(IncidentUpdated, key="ft-1", seq=step, peak_pps=100 + step))
                for i in range(10 * step, 10 * step + 10):
                    harness.publish(second(M0 + i, pps=1000 + i))
            harness.publish(incident(IncidentResolved, key="ft-1", seq=9, status="resolved", ended_at=T0 + 90,
                                     peak_pps=110))
            harness.publish(PcapSaved(incident_key="ft-1", path=str(capture), packets=0, bytes=len(content),
                                      linktype=1, sha256="", sample_rate=1, truncated=False))
            wait_for(lambda: rp.fresh_counters()["retries"] >= 3, message="the reporter retries")
            srv.start()
            rp.wait_drained(60)
    (inc,) = srv.incidents()
    assert inc["incident_key"] == "ft-1" and inc["status"] == "resolved" and inc["ended_at"] == iso(T0 + 90)
    history = srv.history(inc["incident_id"])
    assert [(h["kind"], h["body"]["peak_pps"]) for h in history] == [
        ("open", 100), ("update", 101), ("update", 102), ("update", 103), ("update", 104), ("resolve", 110)]
    assert not any("incident_id" in h["body"] for h in history)  # part C: the uuid is in the path
    assert history[-1]["body"]["duration_seconds"] == 90.0
    assert inc["pcap_bytes"] == len(content) and inc["pcap_sha256"] == hashlib.sha256(content).hexdigest()
    metrics = srv.metrics()
    assert [m["recorded_at"] for m in metrics] == [iso(M0 + i) for i in range(10)] + [
        iso(M0 + i) for i in range(20, 50)]
    assert [m["pps"] for m in metrics] == [1000 + i for i in range(10)] + [1000 + i for i in range(20, 50)]
