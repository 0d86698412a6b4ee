"""What a message says, independent of where it goes: a title, labelled facts, a link (pure).

Everything here comes from an incident an agent reported: the kinds' renderers escape it for their
own markup (render.py); nothing here is markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from floodwatch.server.notify.rules import DIGEST, ESCALATE, OPEN, RESOLVE, TEST, vector_names

MAX_LIST = 5  # targets / sources shown
MAX_DIGEST_LINES = 10


@dataclass(frozen=True)
class Message:
    """One outbox row, as the renderers see it."""

    delivery_id: str  # stable across retries: the idempotency key
    event: str  # open | escalate | resolve | digest | test
    reason: str
    incident: dict[str, Any] | None  # the incident as stored when the message was queued
    items: list[dict[str, Any]]  # digest: [{"event", "reason", "incident"}]
    created_at: float
    channel: str


@dataclass(frozen=True)
class Summary:
    title: str
    facts: list[tuple[str, str]]
    link: str  # empty: none
    severity: str  # low..critical (digest: the highest)
    lines: list[str]  # digest: one line per incident


def rate(value: Any, unit: str) -> str:
    v = float(value or 0)
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= factor:
            return f"{v / factor:.1f} {prefix}{unit}"
    return f"{v:.0f} {unit}"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def incident_duration(inc: dict[str, Any]) -> float | None:
    start, end = _epoch(inc.get("started_at") or inc.get("created_at")), _epoch(inc.get("ended_at"))
    return None if start is None or end is None else end - start


def attack(inc: dict[str, Any]) -> str:
    family = str(inc.get("attack_family") or "unknown")
    return f"{family}/{inc['attack_subtype']}" if inc.get("attack_subtype") else family


def _listed(values: list[str], total: int | None = None) -> str:
    shown = ", ".join(values[:MAX_LIST])
    more = max(len(values), total or 0) - min(len(values), MAX_LIST)
    return f"{shown} (+{more} more)" if more > 0 and shown else (shown or "-")


def link_for(base: str, inc: dict[str, Any] | None) -> str:
    if not base or not inc:
        return ""
    return f"{base.rstrip('/')}/incidents/{int(inc['incident_id'])}"


def facts(inc: dict[str, Any], event: str) -> list[tuple[str, str]]:
    sources = [f"{s.get('ip')} ({s.get('count')})" for s in inc.get("top_src_ips") or [] if isinstance(s, dict)]
    out = [("Node", str(inc.get("node_name") or "-")), ("Attack", attack(inc)),
           ("Severity", str(inc.get("severity") or "-")),
           ("Peak", f"{rate(inc.get('peak_pps'), 'pps')}, {rate(inc.get('peak_bps'), 'bit/s')}"),
           ("Targets", _listed([str(t) for t in inc.get("target_ips") or []])),
           ("Top sources", _listed(sources, inc.get("source_ip_count")))]
    if vector_names(inc):
        out.append(("Vectors", ", ".join(vector_names(inc))))
    out.append(("Started", str(inc.get("started_at") or inc.get("created_at") or "-")))
    if event == RESOLVE:
        took = incident_duration(inc)
        out.append(("Duration", duration(took) if took is not None else "-"))
        out.append(("Totals", f"{inc.get('source_ip_count') or 0} sources, {inc.get('updates') or 0} updates"))
    out.append(("Incident", f"#{inc.get('incident_id')}"))
    return out


def _title(msg: Message, inc: dict[str, Any]) -> str:
    node, sev = inc.get("node_name") or "?", inc.get("severity") or "?"
    if msg.event == OPEN:
        return f"DDoS attack on {node}: {attack(inc)} ({sev})"
    if msg.event == ESCALATE:
        return f"DDoS attack on {node} escalated: {msg.reason}"
    took = incident_duration(inc)
    return f"DDoS attack on {node} resolved" + (f" after {duration(took)}" if took is not None else "")


def digest_summary(msg: Message, link_base: str) -> Summary:
    attacked = {str(i["incident"].get("node_name")) for i in msg.items if i["event"] in (OPEN, ESCALATE)}
    counts = {k: sum(1 for i in msg.items if i["event"] == k) for k in (OPEN, ESCALATE, RESOLVE)}
    title = f"{len(attacked)} node{'s' if len(attacked) != 1 else ''} under attack" if attacked else \
        f"{counts[RESOLVE]} attack{'s' if counts[RESOLVE] != 1 else ''} resolved"
    lines = []
    for item in msg.items[:MAX_DIGEST_LINES]:
        inc = item["incident"]
        lines.append(f"{item['event']}: {inc.get('node_name')} {attack(inc)} {inc.get('severity')}, "
                     f"peak {rate(inc.get('peak_pps'), 'pps')} (#{inc.get('incident_id')})")
    if len(msg.items) > MAX_DIGEST_LINES:
        lines.append(f"... and {len(msg.items) - MAX_DIGEST_LINES} more")
    ranks = ["low", "medium", "high", "critical"]
    worst = max((ranks.index(i["incident"].get("severity")) for i in msg.items
                 if i["incident"].get("severity") in ranks), default=0)
    summary_facts = [("Opened", str(counts[OPEN])), ("Escalated", str(counts[ESCALATE])),
                     ("Resolved", str(counts[RESOLVE]))]
    base = link_base.rstrip("/") + "/incidents" if link_base else ""
    return Summary(title, summary_facts, base, ranks[worst], lines)


def summarize(msg: Message, link_base: str) -> Summary:
    if msg.event == DIGEST:
        return digest_summary(msg, link_base)
    if msg.event == TEST or msg.incident is None:
        return Summary(f"floodwatch test message (channel {msg.channel})",
                       [("Channel", msg.channel), ("Sent", datetime.fromtimestamp(msg.created_at, UTC).isoformat())],
                       link_base.rstrip("/") if link_base else "", "info", [])
    inc = msg.incident
    return Summary(_title(msg, inc), facts(inc, msg.event), link_for(link_base, inc),
                   str(inc.get("severity") or "low"), [])


def plain_text(s: Summary) -> str:
    out = [s.title, ""] + [f"{k}: {v}" for k, v in s.facts]
    if s.lines:
        out += ["", *s.lines]
    if s.link:
        out += ["", s.link]
    return "\n".join(out)
