"""One http_flood incident: evidence summed over its windows (bounded), its name and its proposals.

Subtypes, first that applies: error_flood (most answers 4xx/5xx), cache_bypass (most requests carry
a query string and those are mostly distinct), login_flood / path_flood (one path other than / takes
most requests; login_flood when it looks like a login), post_flood (mostly POST), bot_flood (one user
agent carries most requests), get_flood.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from floodwatch.detect.incident import Lifecycle
from floodwatch.messages import WebWindow
from floodwatch.settings.weblog import HttpDetectSettings

KEEP = 64  # entries kept per dimension (the largest)
TOP = 10
LOGIN = re.compile(r"login|signin|sign_in|logon|auth|xmlrpc|wp-admin|session|token|password", re.I)


def add_top(acc: Counter[str], rows: list[Any]) -> None:
    for row in rows:
        if isinstance(row, list | tuple) and len(row) == 2 and isinstance(row[1], int):
            acc[str(row[0])] += row[1]
    if len(acc) > 2 * KEEP:
        for k, _ in acc.most_common()[KEEP:]:
            del acc[k]


def share(acc: Counter[str], total: int, n: int = 1) -> float:
    return sum(v for _, v in acc.most_common(n)) / total if total > 0 else 0.0


@dataclass
class Evidence:
    requests: int = 0
    seconds: float = 0.0
    with_query: int = 0
    distinct_queries: int = 0
    max_clients: int = 0
    clients: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)

    def add(self, w: WebWindow) -> None:
        self.requests += w.requests
        self.seconds += max(w.t_end - w.t_start, 0.0)
        self.with_query += w.with_query
        self.distinct_queries += w.distinct_queries
        self.max_clients = max(self.max_clients, w.distinct_clients)
        for acc, rows in ((self.clients, w.top_clients), (self.paths, w.top_paths), (self.agents, w.top_agents),
                          (self.sites, w.top_sites)):
            add_top(acc, rows)
        self.methods.update({str(k): int(v) for k, v in w.methods.items()})
        self.status.update({str(k): int(v) for k, v in w.status.items()})

    def subtype(self) -> str:
        n = self.requests
        if n <= 0:
            return "get_flood"
        if (self.status["4xx"] + self.status["5xx"]) / n >= 0.5:
            return "error_flood"
        if self.with_query / n >= 0.5 and self.distinct_queries >= 0.5 * self.with_query:
            return "cache_bypass"
        top_path = self.paths.most_common(1)[0][0] if self.paths else "/"
        if top_path != "/" and share(self.paths, n) >= 0.6:
            return "login_flood" if LOGIN.search(top_path) else "path_flood"
        if self.methods["POST"] / n >= 0.5:
            return "post_flood"
        if share(self.agents, n) >= 0.8:
            return "bot_flood"
        return "get_flood"


def proposals(ev: Evidence, s: HttpDetectSettings) -> list[str]:
    """Commands the executor validates: block the top clients, limit new connections per source."""
    return mitigations(ev.clients, ev.requests, s.block_share, s.web_ports, s.hashlimit_rps)


def mitigations(clients: Counter[str], total: int, block_share: float, ports: list[int] | tuple[int, ...],
                hashlimit_rps: int, name: str = "fw_http") -> list[str]:
    """Per-source blocks for the top clients with `block_share` of `total` or more, and a per-source
    hashlimit of new connections to each port (both in the executor's validated grammar)."""
    out: list[str] = []
    for ip, n in clients.most_common(5):
        if n / max(total, 1) < block_share:
            continue
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        out.append(f"{'ip6tables' if addr.version == 6 else 'iptables'} -I INPUT -s {addr} -j DROP")
    for port in ports:
        out.append(f"iptables -I INPUT -p tcp --dport {port} --syn -m hashlimit --hashlimit-above "
                   f"{hashlimit_rps}/second --hashlimit-mode srcip --hashlimit-name {name}{port} -j DROP")
    return out


def severity(ratio: float) -> str:
    return "critical" if ratio >= 20 else "high" if ratio >= 5 else "medium" if ratio >= 2 else "low"


@dataclass
class HttpIncident(Lifecycle):
    started_at: float
    threshold_rps: float
    threshold_source: str
    trigger: str  # "host" | "site <name>"
    settings: HttpDetectSettings
    evidence: Evidence = field(default_factory=Evidence)
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "active"
    seq: int = -1
    updated_at: float = 0.0
    ended_at: float | None = None
    peak_rps: float = 0.0

    def fields(self) -> dict[str, Any]:
        ev = self.evidence
        n = max(ev.requests, 1)
        ratio = self.peak_rps / self.threshold_rps if self.threshold_rps > 0 else 0.0
        site = ev.sites.most_common(1)[0][0] if ev.sites else ""
        return {
            "incident_key": self.key, "status": self.status, "attack_family": "http_flood",
            "attack_subtype": ev.subtype(), "severity": severity(ratio),
            "confidence": min(95, 60 + round(10 * min(ratio, 3.5))),
            "started_at": self.started_at, "ended_at": self.ended_at, "updated_at": self.updated_at,
            "peak_pps": round(self.peak_rps), "peak_bps": 0,
            "protocol_breakdown": {"tcp": 100.0}, "tcp_flag_breakdown": {}, "geo_breakdown": {},
            "source_ip_count": ev.max_clients,
            "top_src_ips": [{"ip": ip, "count": c} for ip, c in ev.clients.most_common(TOP)],
            "top_dst_ports": [], "target_ips": [], "ioc_matches": [], "spoofing_detected": False,
            "botnet_detected": False,
            "vectors": [{"family": "http_flood", "subtype": ev.subtype(), "share": 100.0}],
            "extra": {
                "source": "weblog", "site": site, "peak_rps": round(self.peak_rps),
                "threshold_rps": round(self.threshold_rps), "threshold_source": self.threshold_source,
                "trigger": self.trigger, "requests": ev.requests,
                "top_paths": [{"path": p, "count": c} for p, c in ev.paths.most_common(TOP)],
                "top_agents": [{"agent": a, "count": c} for a, c in ev.agents.most_common(TOP)],
                "status_mix": {k: round(100 * v / n, 1) for k, v in sorted(ev.status.items())},
                "methods": dict(ev.methods.most_common(TOP)),
                "mitigation": proposals(ev, self.settings),
                "duration": round(max(0.0, (self.ended_at or self.updated_at) - self.started_at), 3),
            },
        }
