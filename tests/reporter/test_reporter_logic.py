"""Pure logic of the reporter: mapping to API JSON, delivery policy, remote config, key handling."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from floodwatch.config import ConfigError as _CE
from floodwatch.config import config_from_dict
from floodwatch.errors import ConfigError
from floodwatch.messages import CommandFinished, IncidentOpened, IncidentResolved, IncidentUpdated, TrafficSecond
from floodwatch.reporter import mapping
from floodwatch.reporter.client import resolve_api_key
from floodwatch.reporter.os_info import os_name, parse_os_release
from floodwatch.reporter.policy import Verdict, backoff, classify, parse_retry_after
from floodwatch.reporter.remote_config import BadRemoteConfig, parse_remote_config
from floodwatch.settings.reporter import ReporterSettings

T0 = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def incident(cls: type = IncidentOpened, key: str = "k-1", seq: int = 0, **kw: object) -> IncidentOpened:
    base = dict(
        incident_key=key, status="active", attack_family="udp_flood", attack_subtype="dns_amplification",
        severity="high", confidence=90, started_at=T0, ended_at=None, updated_at=T0 + seq, seq=seq,
        peak_pps=120000, peak_bps=900_000_000, protocol_breakdown={"udp": 99.0, "tcp": 1.0},
        tcp_flag_breakdown={}, geo_breakdown={"US": 10}, source_ip_count=321,
        top_src_ips=[{"ip": "198.18.0.9", "count": 50}], top_dst_ports=[{"port": 53, "count": 9}],
        target_ips=["198.18.1.2"], ioc_matches=[], spoofing_detected=False, botnet_detected=False,
    )
    base.update(kw)
    return cls(**base)  # type: ignore[no-any-return]


def second(t: float, pps: int = 1000, conn: int = 5) -> TrafficSecond:
    return TrafficSecond(t_start=t, t_end=t + 1, pps=pps, bps=pps * 800, pps_in=pps, bps_in=pps * 800, pps_out=0,
                         bps_out=0, tcp_pct=10.0, udp_pct=89.5, icmp_pct=0.5, other_pct=0.0, conn_count=conn,
                         src_distinct=4, sample_rate=1.0, exact=True, kernel_drops=0, malformed=0)


def test_reporter_iso_is_utc_with_z_and_round_trips() -> None:
    assert mapping.iso(T0) == "2026-05-28T20:26:40.250Z"
    assert mapping.parse_iso(mapping.iso(T0)) == pytest.approx(T0, abs=0.001)
    with pytest.raises(ValueError):
        mapping.iso(float("nan"))


def test_reporter_metrics_sample_keeps_its_own_second() -> None:
    s = mapping.metrics_sample(second(T0, pps=4242))
    assert s == {"pps": 4242, "bps": 4242 * 800, "tcp_pct": 10.0, "udp_pct": 89.5, "icmp_pct": 0.5,
                 "recorded_at": "2026-05-28T20:26:40.250Z", "conn_count": 5}
    assert "conn_count" not in mapping.metrics_sample(second(T0, conn=-1))  # unknown is not zero


def test_reporter_incident_lifecycle_bodies() -> None:
    opened = mapping.incident_body(incident())
    assert mapping.incident_op(incident()) == "open"
    assert opened["incident_key"] == "k-1" and opened["status"] == "active"
    assert opened["started_at"] == "2026-05-28T20:26:40.250Z" and "ended_at" not in opened
    assert "incident_id" not in opened  # added at send time, once the server gave one
    assert "exporters" not in opened  # host mode: no routers to name
    assert mapping.incident_body(incident(exporters=["192.0.2.1"]))["exporters"] == ["192.0.2.1"]  # network mode
    upd = incident(IncidentUpdated, seq=1, peak_pps=200000)
    assert mapping.incident_op(upd) == "update" and mapping.incident_body(upd)["peak_pps"] == 200000
    res = incident(IncidentResolved, seq=2, status="resolved", ended_at=T0 + 60)
    body = mapping.incident_body(res)
    assert mapping.incident_op(res) == "resolve"
    assert body["status"] == "resolved" and body["ended_at"] == "2026-05-28T20:27:40.250Z"


def test_reporter_incident_values_outside_the_api_are_normalised() -> None:
    body = mapping.incident_body(incident(attack_family="quic_flood", attack_subtype="", severity="extreme",
                                          confidence=250))
    assert body["attack_family"] == "unknown" and body["attack_subtype"] == "quic_flood"
    assert body["severity"] == "medium" and body["confidence"] == 100


def test_reporter_sends_the_details_of_extra_as_named_fields_only() -> None:
    packet = mapping.incident_body(incident(extra={"carpet_bombing": False, "fragmented": 0.0}))
    assert not {"http_site", "http_top_paths", "mitigation_proposals"} & packet.keys()
    assert "extra" not in packet and "carpet_bombing" not in packet
    web = mapping.incident_body(incident(attack_family="http_flood", extra={
        "site": "shop", "top_paths": [{"path": "/", "count": 5}], "top_agents": [], "status_mix": {"2xx": 100.0},
        "mitigation": ["iptables -I INPUT -s 198.18.0.9 -j DROP"], "requests": 5}))
    assert web["http_site"] == "shop" and web["http_top_paths"] == [{"path": "/", "count": 5}]
    assert web["http_status_mix"] == {"2xx": 100.0}
    assert web["mitigation_proposals"] == ["iptables -I INPUT -s 198.18.0.9 -j DROP"]
    assert "http_top_agents" not in web and "requests" not in web  # empty details are left out


def test_reporter_ack_body() -> None:
    msg = CommandFinished(command_id=5, status="applied", error="", output="x" * 10000, executed_at=T0)
    body = mapping.ack_body(msg)
    assert body["command_id"] == 5 and body["status"] == "applied"
    assert body["executed_at"].endswith("Z") and len(body["output"]) == mapping.MAX_ACK_TEXT


def test_reporter_classify_answers() -> None:
    assert classify(200, None).verdict is Verdict.DELIVERED
    assert classify(201, None).verdict is Verdict.DELIVERED
    assert classify(429, 7.0).verdict is Verdict.THROTTLED and classify(429, 7.0).retry_after == 7.0
    assert classify(503, None).verdict is Verdict.THROTTLED
    assert classify(401, None).verdict is Verdict.AUTH and classify(401, None).reason == "401 unauthorized"
    assert classify(403, None).verdict is Verdict.AUTH
    for status in (500, 502, 504, 408, 302):
        assert classify(status, None).verdict is Verdict.RETRY, status
    for status in (400, 404, 413, 422):
        assert classify(status, None).verdict is Verdict.DEAD, status


def test_reporter_retry_after_seconds_and_dates() -> None:
    now = 1_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30, abs=1)
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("999999999", now) == 3600.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None, bad


def test_reporter_backoff_doubles_with_jitter_and_caps() -> None:
    lows = [backoff(n, 1.0, 60.0, rand=lambda: 0.0) for n in range(1, 9)]
    highs = [backoff(n, 1.0, 60.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert lows == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert highs == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff(10_000, 1.0, 60.0) <= 60.0


def test_reporter_remote_config_normalised() -> None:
    rc = parse_remote_config({
        "node_id": 1, "pps_threshold": 50000, "baseline": {"p99_pps": 12000, "mean_pps": 3400.5},
        "ioc_patterns": ["deadbeef", {"pattern": "GET /x", "name": "x", "attack_family": "http_flood"}],
        "pending_commands": [{"id": 5, "command": "iptables -I INPUT -s 1.2.3.4 -j DROP"}],
    })
    assert rc.settings_ok and not rc.problems
    assert rc.pps_threshold == 50000 and rc.bps_threshold is None and rc.baseline["mean_pps"] == 3400.5
    assert rc.ioc_patterns[0] == {"pattern": "deadbeef", "name": "deadbeef", "attack_family": ""}
    assert rc.commands == [(5, "iptables -I INPUT -s 1.2.3.4 -j DROP")]


@pytest.mark.parametrize("bad", [
    {"pps_threshold": "50000"}, {"pps_threshold": True}, {"pps_threshold": -1}, {"baseline": [1, 2]},
    {"baseline": {"p99_pps": "high"}}, {"ioc_patterns": "deadbeef"}, {"ioc_patterns": [42]},
    {"ioc_patterns": [{"pattern": ""}]},
])
def test_reporter_remote_config_wrong_types_are_not_applied(bad: dict[str, object]) -> None:
    rc = parse_remote_config({"node_id": 1, **bad, "pending_commands": [{"id": 9, "command": "x"}]})
    assert not rc.settings_ok and rc.problems
    assert rc.commands == [(9, "x")]  # commands are judged on their own


def test_reporter_remote_config_commands_pass_only_as_data() -> None:
    weird = [{"id": 1, "command": "iptables -F; rm -rf / #"}, {"id": 2, "command": {"op": "block", "ip": ["x"]}},
             {"id": "3", "command": "x"}, {"id": True, "command": "x"}, {"id": 4}, "id=5", {"id": 6, "command": None}]
    rc = parse_remote_config({"pending_commands": weird})
    assert rc.commands == [(1, "iptables -F; rm -rf / #"), (2, {"op": "block", "ip": ["x"]}), (6, None)]
    assert len(rc.problems) == 4
    with pytest.raises(BadRemoteConfig):
        parse_remote_config(["not", "an", "object"])
    assert parse_remote_config({"pending_commands": "rm -rf /"}).commands == []
    part_c = {"id": 7, "command_text": "iptables -I INPUT -s 203.0.113.7 -j DROP", "command_type": "iptables"}
    assert parse_remote_config({"pending_commands": [part_c]}).commands == [(7, part_c["command_text"])]
    both = {**part_c, "command": {"op": "block"}}  # floodwatch's server sends both: `command` wins
    assert parse_remote_config({"pending_commands": [both]}).commands == [(7, {"op": "block"})]


def test_reporter_os_release() -> None:
    info = parse_os_release('NAME="Ubuntu"\nVERSION_ID="22.04"\n# c\nbroken\nPRETTY_NAME=\'Ubuntu 22.04.4 LTS\'\n')
    assert info["NAME"] == "Ubuntu" and info["PRETTY_NAME"] == "Ubuntu 22.04.4 LTS"
    assert os_name(Path("/nonexistent/os-release"))  # falls back to the kernel, never empty
    assert os_name()


def test_reporter_api_key_sources(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    os.chmod(key_file, 0o600)
    s = ReporterSettings(api_key="config-key", api_key_file=str(key_file))
    assert resolve_api_key(s, env={"FLOODWATCH_API_KEY": "env-key"}) == "env-key"
    assert resolve_api_key(s, env={}) == "file-key"
    assert resolve_api_key(ReporterSettings(api_key="config-key"), env={}) == "config-key"
    assert "config-key" not in repr(s)  # the dataclass never prints the key
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_api_key(s, env={})


def test_reporter_settings_validated() -> None:
    with pytest.raises(_CE, match=r"reporter\.url"):
        config_from_dict({"reporter": {"url": "ftp://x/api"}})
    with pytest.raises(_CE, match=r"reporter\.url"):
        config_from_dict({"reporter": {"url": "https://user:pw@x/api"}})
    with pytest.raises(_CE, match="backoff_initial"):
        config_from_dict({"reporter": {"backoff_initial": 0}})
    assert config_from_dict({}).reporter.url == "http://127.0.0.1:8787/api/v1/agent"
