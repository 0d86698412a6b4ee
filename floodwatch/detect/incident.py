"""One incident: its identity, lifecycle state, peaks and evidence, and the events that describe it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from floodwatch.detect.classify import classify_profile
from floodwatch.detect.profile import Profile
from floodwatch.detect.victims import Targets
from floodwatch.messages import IncidentEvent, IncidentOpened, IncidentResolved, IncidentUpdated

MAX_IOC_MATCHES = 100


class Lifecycle:
    """The events of an incident's life (opened, updated..., resolved), numbered by seq; the incident
    kinds (packet incidents here, http_flood incidents in http_incident.py) supply fields()."""

    seq: int
    status: str
    started_at: float
    updated_at: float
    ended_at: float | None

    def fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def event(self, kind: type[IncidentEvent], t: float) -> IncidentEvent:
        """The next event (seq + 1) of the given kind at window time t."""
        self.seq += 1
        self.updated_at = max(self.updated_at, t)
        return kind(seq=self.seq, **self.fields())

    def opened(self, t: float) -> IncidentEvent:
        return self.event(IncidentOpened, t)

    def updated(self, t: float) -> IncidentEvent:
        return self.event(IncidentUpdated, t)

    def resolved(self, ended_at: float) -> IncidentEvent:
        self.status = "resolved"
        self.ended_at = ended_at
        return self.event(IncidentResolved, ended_at)


@dataclass
class HoldDown:
    """An active incident's end and pacing, in window time: resolved once quiet (under its resolve level)
    for `hold_down` s, then no new incident for `cooldown` s; an update every `update_interval` s while it
    lasts. One for the detectors that keep a single incident (http_flood, tls_handshake_flood)."""

    hold_down: float
    cooldown: float
    update_interval: float
    quiet_since: float | None = None
    cooldown_until: float = float("-inf")
    last_update: float = 0.0

    def opened(self, t: float) -> None:
        self.quiet_since, self.last_update = None, t

    def step(self, inc: Lifecycle, loud: bool, t_start: float, t_end: float) -> IncidentEvent | None:
        """The event of one window of the active incident `inc` (`loud`: the window is over the resolve
        level): IncidentResolved (inc.status is then "resolved"), an update when one is due, or None."""
        if loud:
            self.quiet_since = None
        else:
            self.quiet_since = t_start if self.quiet_since is None else self.quiet_since
            if t_end - self.quiet_since >= self.hold_down:
                ev = inc.resolved(max(self.quiet_since, inc.started_at))
                self.quiet_since = None
                self.cooldown_until = t_end + self.cooldown
                return ev
        if t_end - self.last_update >= self.update_interval:
            self.last_update = t_end
            return inc.updated(t_end)
        return None


@dataclass
class Incident(Lifecycle):
    started_at: float
    threshold_pps: float
    threshold_bps: float
    threshold_source: str
    trigger: str  # "host" | "victim <ip>" | "prefix <cidr>"
    profile: Profile = field(default_factory=Profile)
    targets: Targets = field(default_factory=Targets)  # every victim over the incident's life
    host_addresses: list[str] = field(default_factory=list)  # the target when the packets name none
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "active"
    seq: int = -1  # the last event's seq; opened is 0
    updated_at: float = 0.0
    ended_at: float | None = None
    peak_pps: int = 0
    peak_bps: int = 0
    enriched_subtype: str = ""
    enriched_iocs: list[Any] = field(default_factory=list)
    findings_path: str = ""

    def note_peak(self, pps: float, bps: float) -> None:
        self.peak_pps = max(self.peak_pps, round(pps))
        self.peak_bps = max(self.peak_bps, round(bps))

    def enrich(self, subtype: str, iocs: list[Any], findings_path: str) -> None:
        """Merge the recorder's forensic findings (a confirmed subtype, IOC matches)."""
        if subtype:
            self.enriched_subtype = subtype
        for m in iocs:
            if m not in self.enriched_iocs and len(self.enriched_iocs) < MAX_IOC_MATCHES:
                self.enriched_iocs.append(m)
        if findings_path:
            self.findings_path = findings_path

    def fields(self) -> dict[str, Any]:
        """Every IncidentEvent field (without seq), from the evidence so far."""
        c = classify_profile(self.profile, self.threshold_pps, self.peak_pps, self.peak_bps)
        listed = self.targets.listed()
        if listed:
            c["target_ips"] = listed
            c["extra"]["carpet_bombing"] = self.targets.carpet()
        elif self.host_addresses:
            c["target_ips"] = list(self.host_addresses)
            c["extra"]["carpet_bombing"] = False
        if self.enriched_subtype:
            c["extra"]["subtype_from_packets"] = c["attack_subtype"]
            c["attack_subtype"] = self.enriched_subtype
        if self.enriched_iocs:
            c["ioc_matches"] = c["ioc_matches"] + [m for m in self.enriched_iocs if m not in c["ioc_matches"]]
            c["botnet_detected"] = True
        c["extra"].update({
            "threshold_pps": round(self.threshold_pps), "threshold_bps": round(self.threshold_bps),
            "threshold_source": self.threshold_source, "trigger": self.trigger,
            "duration": round(max(0.0, (self.ended_at or self.updated_at) - self.started_at), 3),
        })
        if self.findings_path:
            c["extra"]["findings_path"] = self.findings_path
        return {
            "incident_key": self.key,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "updated_at": self.updated_at,
            **c,
        }
