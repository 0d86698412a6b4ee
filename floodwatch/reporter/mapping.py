"""Bus messages -> Agent API JSON bodies (../shared/AGENT_API.md). Pure functions, no I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from floodwatch.messages import (
    CommandFinished,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    TrafficSecond,
)

FAMILIES = frozenset({"udp_flood", "syn_flood", "http_flood", "icmp_flood", "dns_flood", "multi_vector", "unknown"})
SEVERITIES = ("low", "medium", "high", "critical")
ACK_STATUSES = frozenset({"applied", "rejected", "failed"})
# extra -> additive named body fields (docs/weblog.md): the details of an http_flood that the API's
# fields have no place for; a server keeps them in the incident's history, others ignore them
EXTRA_FIELDS = (("site", "http_site"), ("top_paths", "http_top_paths"), ("top_agents", "http_top_agents"),
                ("status_mix", "http_status_mix"), ("methods", "http_methods"),
                ("mitigation", "mitigation_proposals"), ("peak_tls_hellos_per_s", "tls_peak_hellos_per_s"))
MAX_ACK_TEXT = 4000  # characters of a command's error/output sent back


def iso(ts: float) -> str:
    """Float epoch seconds -> ISO 8601 UTC with a Z, millisecond precision."""
    if not math.isfinite(ts):
        raise ValueError(f"timestamp {ts!r} is not finite")
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """ISO 8601 (with Z or an offset) -> float epoch seconds; ValueError when it is not one."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def metrics_sample(msg: TrafficSecond) -> dict[str, Any]:
    """A per-second summary -> one metrics sample, stamped with the second it describes."""
    sample: dict[str, Any] = {
        "pps": int(msg.pps),
        "bps": int(msg.bps),
        "tcp_pct": round(float(msg.tcp_pct), 2),
        "udp_pct": round(float(msg.udp_pct), 2),
        "icmp_pct": round(float(msg.icmp_pct), 2),
        "recorded_at": iso(msg.t_start),
    }
    if msg.conn_count >= 0:  # -1: unknown, so leave it out rather than report 0
        sample["conn_count"] = int(msg.conn_count)
    return sample


def incident_op(msg: IncidentEvent) -> str:
    if isinstance(msg, IncidentOpened):
        return "open"
    if isinstance(msg, IncidentResolved) or msg.status == "resolved":
        return "resolve"
    return "update"


def incident_body(msg: IncidentEvent) -> dict[str, Any]:
    """An incident event -> the body of POST /incident, without `incident_id` (added at send time)."""
    family = msg.attack_family if msg.attack_family in FAMILIES else "unknown"
    subtype = msg.attack_subtype or ("" if family == msg.attack_family else msg.attack_family)
    resolved = incident_op(msg) == "resolve"
    body: dict[str, Any] = {
        "incident_key": msg.incident_key,
        "status": "resolved" if resolved else "active",
        "attack_family": family,
        "attack_subtype": subtype,
        "severity": msg.severity if msg.severity in SEVERITIES else "medium",
        "confidence": max(0, min(100, int(msg.confidence))),
        "started_at": iso(msg.started_at),
        "peak_pps": int(msg.peak_pps),
        "peak_bps": int(msg.peak_bps),
        "protocol_breakdown": dict(msg.protocol_breakdown),
        "tcp_flag_breakdown": dict(msg.tcp_flag_breakdown),
        "geo_breakdown": dict(msg.geo_breakdown),
        "source_ip_count": int(msg.source_ip_count),
        "top_src_ips": list(msg.top_src_ips),
        "top_dst_ports": list(msg.top_dst_ports),
        "target_ips": list(msg.target_ips),
        "ioc_matches": list(msg.ioc_matches),
        "spoofing_detected": bool(msg.spoofing_detected),
        "botnet_detected": bool(msg.botnet_detected),
    }
    if msg.vectors:
        body["vectors"] = list(msg.vectors)
    if msg.exporters:
        body["exporters"] = list(msg.exporters)  # network mode (docs/collector.md); the server keeps it
    body.update(extra_fields(msg.extra))
    if resolved or msg.ended_at is not None:
        body["ended_at"] = iso(msg.ended_at if msg.ended_at is not None else msg.updated_at)
    return body


def extra_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """The details in an incident's `extra` that have a named body field (EXTRA_FIELDS), when present."""
    return {name: extra[key] for key, name in EXTRA_FIELDS if extra.get(key) not in (None, "", [], {})}


def ack_body(msg: CommandFinished) -> dict[str, Any]:
    """A finished command -> the body of POST /commands/ack."""
    status = msg.status if msg.status in ACK_STATUSES else "failed"
    return {
        "command_id": int(msg.command_id),
        "status": status,
        "error": msg.error[:MAX_ACK_TEXT],
        "output": msg.output[:MAX_ACK_TEXT],
        "executed_at": iso(msg.executed_at),
    }


def heartbeat_body(version: str, uptime: float, os_name: str) -> dict[str, Any]:
    return {"agent_version": version, "uptime": max(0, int(uptime)), "os": os_name}
