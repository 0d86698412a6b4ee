"""tls_handshake_flood: new TLS connections (ClientHellos, counted by the aggregator from packet heads,
floodwatch/aggregate/tls.py) far over a learnt baseline. Pure: window time only.

HTTPS hides the requests, and keep-alive / HTTP/2 carry many per packet, so an HTTPS flood can stay far
under the packet floor; but every new connection starts with a ClientHello, and the handshake is what
costs the server. The rate is taken over the last `SPAN` (0.5) s of windows (h2load and real floods come
in bursts shorter than a 100 ms window); as that stretches a burst by up to SPAN, the sustain rule asks
for `sustain_seconds` + SPAN over the threshold. Learnt like packets (floodwatch.detect.baseline.Baseline, its
pps axis carrying ClientHellos/s, floor `[detector] tls_floor`); `fast_ratio` x the threshold opens at
once, over it for `sustain_seconds` opens too; resolved after `hold_down` s under `resolve_ratio`, then
`cooldown`. Nothing is learnt during a run, an incident or a cooldown (the baseline is not saved: after
a restart the floor holds until `min_learn_seconds` are learnt again).
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from floodwatch.detect.baseline import Baseline
from floodwatch.detect.http_incident import TOP, add_top, mitigations, severity
from floodwatch.detect.incident import HoldDown, Lifecycle
from floodwatch.messages import IncidentEvent, TrafficWindow
from floodwatch.settings.detector import DetectorSettings

SPAN = 0.5  # seconds of windows the rate is taken over
NO_BPS = 1e18


@dataclass
class TlsIncident(Lifecycle):
    started_at: float
    threshold: float
    threshold_source: str
    ports: tuple[int, ...]
    hashlimit_rps: int
    sources: Counter[str] = field(default_factory=Counter)
    hellos: int = 0
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "active"
    seq: int = -1
    updated_at: float = 0.0
    ended_at: float | None = None
    peak: float = 0.0

    def add(self, w: TrafficWindow) -> None:
        self.hellos += w.tls_hellos
        add_top(self.sources, w.top_tls_src)

    def fields(self) -> dict[str, Any]:
        ratio = self.peak / self.threshold if self.threshold > 0 else 0.0
        vec = {"family": "http_flood", "subtype": "tls_handshake_flood", "share": 100.0}
        return {
            "incident_key": self.key, "status": self.status, "attack_family": "http_flood",
            "attack_subtype": "tls_handshake_flood", "severity": severity(ratio),
            "confidence": min(95, 60 + round(10 * min(ratio, 3.5))),
            "started_at": self.started_at, "ended_at": self.ended_at, "updated_at": self.updated_at,
            "peak_pps": round(self.peak), "peak_bps": 0, "protocol_breakdown": {"tcp": 100.0},
            "tcp_flag_breakdown": {}, "geo_breakdown": {}, "source_ip_count": len(self.sources),
            "top_src_ips": [{"ip": ip, "count": c} for ip, c in self.sources.most_common(TOP)],
            "top_dst_ports": [], "target_ips": [], "ioc_matches": [], "spoofing_detected": False,
            "botnet_detected": False, "vectors": [vec],
            "extra": {
                "source": "tls", "tls_hellos": self.hellos, "peak_tls_hellos_per_s": round(self.peak),
                "threshold_tls_hellos_per_s": round(self.threshold), "threshold_source": self.threshold_source,
                "mitigation": mitigations(self.sources, self.hellos, 0.05, self.ports, self.hashlimit_rps,
                                          "fw_tls"),
            },
        }


class TlsDetector:
    def __init__(self, s: DetectorSettings, ports: tuple[int, ...]) -> None:
        self.s, self.ports = s, ports
        self.baseline = Baseline(s.tls_floor, NO_BPS, s.multiplier, s.mean_multiplier, s.min_learn_seconds)
        self.recent: deque[tuple[float, int, float]] = deque(maxlen=1024)
        self.run_start: float | None = None
        self.run: TlsIncident | None = None  # evidence of the run before it opens
        self.incident: TlsIncident | None = None
        self.hold = HoldDown(s.hold_down, s.cooldown, s.update_interval)
        self.counters = {"tls_incidents": 0, "tls_bursts_ignored": 0}

    def rate(self, w: TrafficWindow) -> float:
        """ClientHellos/s over the last SPAN seconds of windows."""
        self.recent.append((w.t_end, w.tls_hellos, max(w.t_end - w.t_start, 1e-3)))
        while self.recent and self.recent[0][0] <= w.t_end - SPAN:
            self.recent.popleft()
        return sum(r[1] for r in self.recent) / max(sum(r[2] for r in self.recent), 1e-3)

    def step(self, w: TrafficWindow) -> list[IncidentEvent]:
        rate = self.rate(w)
        if self.incident is not None:
            return self._step_active(w, rate)
        thr = self.baseline.thresholds(w.t_end)
        if rate < thr.pps:
            if self.run is not None:
                self.counters["tls_bursts_ignored"] += 1
                self.run = None
            elif w.t_end >= self.hold.cooldown_until:
                self.baseline.learn(w.t_end, w.tls_hellos / max(w.t_end - w.t_start, 1e-3), 0.0,
                                    max(w.t_end - w.t_start, 1e-3))
            return []
        if self.run is None:
            self.run = TlsIncident(w.t_start, thr.pps, thr.source, self.ports, self.s.tls_hashlimit_rps)
        run = self.run
        run.add(w)
        run.peak = max(run.peak, rate)
        fast = rate >= self.s.fast_ratio * thr.pps
        if (fast or w.t_end - run.started_at >= self.s.sustain_seconds + SPAN) and w.t_end >= self.hold.cooldown_until:
            self.incident, self.run = run, None
            self.hold.opened(w.t_end)
            self.counters["tls_incidents"] += 1
            return [run.opened(w.t_end)]
        return []

    def step_quiet(self, windows: list[TrafficWindow]) -> list[IncidentEvent]:
        """step() on each of a run of windows without a ClientHello, with the same result: once no incident
        or run is open and the rate's span holds no hello, every rate is zero, under any threshold (at
        least tls_floor, 1): what is left of step() is the span and learning."""
        events: list[IncidentEvent] = []
        i = 0
        while i < len(windows) and (self.incident is not None or self.run is not None or windows[i].tls_hellos
                                    or any(r[1] for r in self.recent)):
            events += self.step(windows[i])
            i += 1
        for w in windows[i:]:
            width = max(w.t_end - w.t_start, 1e-3)
            self.recent.append((w.t_end, 0, width))
            while self.recent and self.recent[0][0] <= w.t_end - SPAN:
                self.recent.popleft()
            if w.t_end >= self.hold.cooldown_until:
                self.baseline.learn(w.t_end, 0.0, 0.0, width)
        return events

    def _step_active(self, w: TrafficWindow, rate: float) -> list[IncidentEvent]:
        inc = self.incident
        assert inc is not None
        inc.add(w)
        loud = rate >= self.s.resolve_ratio * inc.threshold
        if loud:
            inc.peak = max(inc.peak, rate)
        ev = self.hold.step(inc, loud, w.t_start, w.t_end)
        if inc.status == "resolved":
            self.incident = None
        return [ev] if ev is not None else []
