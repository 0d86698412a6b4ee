"""Per-window evaluation and the incident lifecycle: confirm, open, update, resolve, cool down.

`Detector.step(window)` is called for every 100 ms TrafficWindow and returns the incident events it
causes. Time comes only from the windows (file time for captures), so results are deterministic.

* Rates are inbound; packets of TCP conversations that also carry traffic out (a bulk transfer, a
  speed test) are taken off before comparing (`bulk_exemption`): only ACK-bearing segments can be
  exempted, never SYN or RST, so a SYN flood answered by SYN-ACKs is still counted in full.
* The ratio of a window is the largest of: host pps and bps against the host thresholds, each victim
  and each victim prefix against the victim thresholds.
* Opening: a run of windows over the threshold (with up to `gap_windows` dips) opens when it has
  `fast_windows` windows and the last is at `fast_ratio` or more (over the whole window, or over its
  second half for the host: a flood that began mid-window opens at that window's end, not the next
  one's), or when it has lasted `sustain_seconds` (longer than a 1 s micro-burst).
* Resolution: under `resolve_ratio` x threshold for `hold_down` seconds; then `cooldown` seconds in
  which nothing opens. Nothing is learnt while a run is being confirmed, an incident is active or
  during the cooldown.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from floodwatch.detect.baseline import Baseline, Thresholds
from floodwatch.detect.classify import flag_set
from floodwatch.detect.hostgroups import HostGroups
from floodwatch.detect.incident import Incident
from floodwatch.detect.profile import Profile
from floodwatch.detect.victims import Targets, prefix_of, rate_targets, share_targets
from floodwatch.messages import IncidentEvent, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from floodwatch.settings.hostgroup import HostGroupSettings

RECENT_KEEP = 32  # resolved incidents kept for late enrichment
GAP_SLACK = 0.05  # seconds: a hole between windows bigger than this counts as silence
EVIDENCE_WAIT_WINDOWS = 3  # open without packet evidence after this many over-threshold windows
BULK_MIN_SEGMENT = 400  # mean inbound bytes per packet of a download-shaped window
BULK_OUT_FACTOR = 2.0  # bytes out / bytes in of an upload-shaped window


@lru_cache(maxsize=256)
def _exemptable(label: str) -> bool:
    f = flag_set(label)
    return "ACK" in f and not f & {"SYN", "RST"}


def ack_like(flags: dict[str, int]) -> int:
    return sum(int(n) for k, n in flags.items() if _exemptable(str(k)))


@dataclass(frozen=True)
class Rates:
    t_start: float
    t_end: float
    seconds: float
    pps: float
    bps: float
    attack_pps: float  # without the exempted bulk-transfer packets
    attack_bps: float
    exempt: int  # packets exempted in this window
    tail_pps: float = 0.0  # attack rates over the window's second half (a flood that began mid-window)
    tail_bps: float = 0.0


def bulk_shaped(w: TrafficWindow) -> bool:
    """Traffic that looks like a transfer: big segments coming in (a download), or much more data going
    out than coming in (an upload, whose inbound half is ACKs). An ACK flood answered by RSTs is
    neither: small segments in, small segments out."""
    if w.packets_in <= 0:
        return False
    return w.bytes_in / w.packets_in >= BULK_MIN_SEGMENT or w.bytes_out >= BULK_OUT_FACTOR * w.bytes_in


def quiet(w: TrafficWindow) -> bool:
    """Nothing came in: its rates are zero whatever the thresholds (no window of it can open anything)."""
    return w.packets_in == 0 and w.bytes_in == 0 and not w.victims


def window_rates(w: TrafficWindow, bulk_exemption: bool = True) -> Rates:
    seconds = max(w.t_end - w.t_start, 1e-3)
    exempt = 0
    if bulk_exemption and w.bidir_packets > 0 and bulk_shaped(w):
        # bidir and flag counts come from the packet records, packets_in may come from exact kernel
        # counters: apply the records' exempt share to the total rather than subtract mixed counts
        seen = w.records_packets_in or sum(w.proto_in.values()) or w.packets_in
        share = min(1.0, min(w.bidir_packets, ack_like(w.tcp_flags)) / seen) if seen > 0 else 0.0
        exempt = round(share * w.packets_in)
    exempt_bytes = w.bytes_in * exempt / w.packets_in if w.packets_in else 0
    attack_pkts, attack_bytes = w.packets_in - exempt, w.bytes_in - exempt_bytes
    # the second half's share of the inbound records, applied to the (maybe exact) window totals
    seen = w.records_packets_in or w.packets_in
    seen_bytes = w.records_bytes_in or w.bytes_in
    half = seconds / 2
    tail_pps = attack_pkts * min(1.0, w.tail_packets_in / seen) / half if seen > 0 else 0.0
    tail_bps = attack_bytes * 8 * min(1.0, w.tail_bytes_in / seen_bytes) / half if seen_bytes > 0 else 0.0
    return Rates(
        w.t_start, w.t_end, seconds,
        w.packets_in / seconds, w.bytes_in * 8 / seconds,
        attack_pkts / seconds, attack_bytes * 8 / seconds, exempt, tail_pps, tail_bps,
    )


@dataclass
class Run:
    """Windows over the threshold being confirmed."""

    start: float
    thresholds: Thresholds
    trigger: str
    windows: int = 0
    gaps: int = 0
    max_ratio: float = 0.0
    profile: Profile = field(default_factory=Profile)
    targets: Targets = field(default_factory=Targets)
    peak_pps: float = 0.0
    peak_bps: float = 0.0


class Detector:
    """The detector's state machine (no sockets, no clock but the windows')."""

    def __init__(self, settings: DetectorSettings, baseline: Baseline | None = None,
                 groups: Sequence[HostGroupSettings] = ()) -> None:
        self.s = settings
        self.baseline = baseline or Baseline(
            settings.floor_pps, settings.floor_bps, settings.multiplier, settings.mean_multiplier,
            settings.min_learn_seconds,
        )
        self.api_pps: int | None = None
        self.api_bps: int | None = None
        self.incident: Incident | None = None
        self.run: Run | None = None
        # the host's own addresses: the target of an attack whose packets name none (frames that do
        # not parse); set by the actor from the capture interfaces
        self.host_addresses: list[str] = []
        self.groups = HostGroups(groups)  # [[hostgroup]]: victim thresholds of their own per prefix
        self.recent: OrderedDict[str, Incident] = OrderedDict()
        self.cooldown_until = float("-inf")
        self.quiet_since: float | None = None
        self.last_update = 0.0
        self.last_end: float | None = None
        self.counters: dict[str, int] = {"windows": 0, "incidents": 0, "learnt_windows": 0, "bursts_ignored": 0,
                                         "exempt_packets": 0}

    # -- configuration ---------------------------------------------------------------------------
    def set_api_config(self, pps: int | None, bps: int | None, baseline: dict[str, Any]) -> None:
        self.api_pps = pps if pps and pps > 0 else None
        self.api_bps = bps if bps and bps > 0 else None
        self.baseline.seed(baseline or {})

    def thresholds(self, t: float) -> Thresholds:
        dyn = self.baseline.thresholds(t) if self.s.dynamic else Thresholds(
            self.s.floor_pps, self.s.floor_bps, "floor")
        pps = self.api_pps or self.s.pps_threshold
        bps = self.api_bps or self.s.bps_threshold
        if not pps and not bps:
            return dyn
        source = "api" if (self.api_pps or self.api_bps) else "static"
        if not (pps and bps):
            source += f"+{dyn.source}"
        return Thresholds(float(pps or dyn.pps), float(bps or dyn.bps), source)

    # -- evaluation ------------------------------------------------------------------------------
    def ratio(self, w: TrafficWindow, r: Rates, thr: Thresholds) -> tuple[float, str]:
        """The window's largest rate/threshold ratio and what carried it."""
        best, trigger = max(r.attack_pps / thr.pps, r.attack_bps / thr.bps), "host"
        vpps = self.s.victim_pps_threshold or thr.pps
        vbps = self.s.victim_bps_threshold or thr.bps
        if vpps >= thr.pps and vbps >= thr.bps and not self.groups:
            return best, trigger  # no victim can be over when the whole host is not
        prefixes: dict[str, list[float]] = {}
        for v in w.victims:
            if not isinstance(v, dict):
                continue
            flags = v.get("tcp_flags") if isinstance(v.get("tcp_flags"), dict) else {}
            pkts = float(v.get("packets", 0)) - min(ack_like(flags or {}), r.exempt)
            byts = float(v.get("bytes", 0))
            gpps, gbps = self.groups.thresholds(str(v.get("ip")), vpps, vbps)
            ratio = max(pkts / r.seconds / gpps, byts * 8 / r.seconds / gbps)
            if ratio > best:
                best, trigger = ratio, f"victim {v.get('ip')}"
            acc = prefixes.setdefault(prefix_of(str(v.get("ip")), self.s.carpet_prefix_v4,
                                                self.s.carpet_prefix_v6), [0.0, 0.0])
            acc[0] += pkts
            acc[1] += byts
        if best >= 1.0:
            return best, trigger  # a prefix counts only for a spread no single address shows
        for prefix, (pkts, byts) in prefixes.items():
            gpps, gbps = self.groups.thresholds(prefix.split("/")[0], vpps, vbps)
            ratio = max(pkts / r.seconds / gpps, byts * 8 / r.seconds / gbps)
            if ratio > best:
                best, trigger = ratio, f"prefix {prefix}"
        return best, trigger

    def step(self, w: TrafficWindow) -> list[IncidentEvent]:
        """Evaluate one window; the incident events it causes (usually none)."""
        self.counters["windows"] += 1
        r = window_rates(w, self.s.bulk_exemption)
        self.counters["exempt_packets"] += r.exempt
        silence_from = self.last_end if self.last_end is not None and w.t_start - self.last_end > GAP_SLACK else None
        self.last_end = w.t_end if self.last_end is None else max(self.last_end, w.t_end)
        if self.incident is not None:
            return self._step_active(w, r, silence_from)
        thr = self.run.thresholds if self.run else self.thresholds(w.t_end)
        ratio, trigger = self.ratio(w, r, thr)
        if silence_from is not None and self.run is not None:
            self._drop_run()
        if ratio >= 1.0:
            return self._step_over(w, r, ratio, trigger, thr)
        if self.run is not None:
            self.run.gaps += 1
            self.run.windows += 1
            if self.run.gaps > self.s.gap_windows:
                self._drop_run()
            return []
        if w.t_end >= self.cooldown_until and self.s.dynamic:
            self.baseline.learn(w.t_end, r.attack_pps, r.attack_bps, r.seconds)
            self.counters["learnt_windows"] += 1
        return []

    def step_quiet(self, windows: list[TrafficWindow]) -> list[IncidentEvent]:
        """step() on each of a run of quiet windows (QuietWindows: no packet, alike but for their times),
        with the same result. While an incident or a run is open each window is stepped; once neither is,
        none can open in such a run (its rates are zero): what is left of step() is counting and learning."""
        events: list[IncidentEvent] = []
        i = 0
        while i < len(windows) and (self.incident is not None or self.run is not None or not quiet(windows[i])):
            events += self.step(windows[i])
            i += 1
        learn = self.s.dynamic
        for w in windows[i:]:
            self.counters["windows"] += 1
            self.last_end = w.t_end if self.last_end is None else max(self.last_end, w.t_end)
            if learn and w.t_end >= self.cooldown_until:
                self.baseline.learn(w.t_end, 0.0, 0.0, max(w.t_end - w.t_start, 1e-3))
                self.counters["learnt_windows"] += 1
        return events

    def _profile_for(self, trigger: str) -> Profile:
        """The evidence of a victim or prefix incident is that victim's own traffic (see Profile)."""
        kind, _, target = trigger.partition(" ")
        lens = (self.s.carpet_prefix_v4, self.s.carpet_prefix_v6)
        if kind in ("victim", "prefix"):
            return Profile(focus={target}, prefix_lens=lens)
        return Profile()

    def _new_run(self, start: float, thr: Thresholds, trigger: str) -> Run:
        lens = (self.s.carpet_prefix_v4, self.s.carpet_prefix_v6)
        run = Run(start, thr, trigger, profile=self._profile_for(trigger), targets=Targets(*lens))
        if run.profile.focus:
            run.targets.add(dict.fromkeys(run.profile.focus, 0))
        return run

    def _add_evidence(self, profile: Profile, targets: Targets, w: TrafficWindow, r: Rates,
                      thr: Thresholds) -> None:
        """One window into a run's or incident's evidence. The destinations it hits join the targets:
        for an incident about victims, each address (else prefix) at resolve_ratio x the victim
        threshold, which then joins the focus; for the host, the shares of the window (victims.py)."""
        lens = (self.s.carpet_prefix_v4, self.s.carpet_prefix_v6)
        if profile.focus:
            limit = self.s.resolve_ratio * (self.s.victim_pps_threshold or thr.pps) * r.seconds
            rows = [(str(v.get("ip")), float(v.get("packets", 0))) for v in w.victims if isinstance(v, dict)]
            profile.focus.update(targets.add(rate_targets(rows, limit, *lens)))
        else:
            dst = {str(row[0]): int(row[1]) for row in w.top_dst_ips}
            targets.add(share_targets(dst, sum(w.proto_in.values()) or w.packets_in, *lens))
        profile.add(w)

    def _drop_run(self) -> None:
        self.counters["bursts_ignored"] += 1
        self.run = None

    def _step_over(self, w: TrafficWindow, r: Rates, ratio: float, trigger: str,
                   thr: Thresholds) -> list[IncidentEvent]:
        run = self.run
        if run is None:
            run = self.run = self._new_run(w.t_start, thr, trigger)
        run.windows += 1
        run.gaps = 0
        run.max_ratio = max(run.max_ratio, ratio)
        self._add_evidence(run.profile, run.targets, w, r, thr)
        run.peak_pps = max(run.peak_pps, r.pps)
        run.peak_bps = max(run.peak_bps, r.bps)
        # a flood that began mid-window: its rate over the window's second half (50 ms) counts too
        tail = max(r.tail_pps / thr.pps, r.tail_bps / thr.bps)
        fast = run.windows >= self.s.fast_windows and max(ratio, tail) >= self.s.fast_ratio
        sustained = w.t_end - run.start >= self.s.sustain_seconds
        # exact kernel counters can run ahead of the packet records: wait (a window at most, usually)
        # for packets to name the attack rather than open it as "unknown" with no breakdown
        evidence = run.profile.proto_total() > 0 or run.windows >= EVIDENCE_WAIT_WINDOWS
        if (fast or sustained) and evidence and w.t_end >= self.cooldown_until:
            return [self._open(w.t_end)]
        return []

    def _open(self, t: float) -> IncidentEvent:
        run = self.run
        assert run is not None
        inc = Incident(run.start, run.thresholds.pps, run.thresholds.bps, run.thresholds.source, run.trigger,
                       profile=run.profile, targets=run.targets, host_addresses=list(self.host_addresses))
        inc.note_peak(run.peak_pps, run.peak_bps)
        self.incident, self.run = inc, None
        self.quiet_since = None
        self.last_update = t
        self.counters["incidents"] += 1
        return inc.opened(t)

    def _step_active(self, w: TrafficWindow, r: Rates, silence_from: float | None) -> list[IncidentEvent]:
        inc = self.incident
        assert inc is not None
        thr = Thresholds(inc.threshold_pps, inc.threshold_bps, inc.threshold_source)
        ratio, _ = self.ratio(w, r, thr)
        if silence_from is not None and self.quiet_since is None:
            self.quiet_since = silence_from
        if ratio >= self.s.resolve_ratio:
            self.quiet_since = None
            self._add_evidence(inc.profile, inc.targets, w, r, thr)
            inc.note_peak(r.pps, r.bps)
        else:
            self.quiet_since = w.t_start if self.quiet_since is None else self.quiet_since
            if w.t_end - self.quiet_since >= self.s.hold_down:
                return [self._resolve(self.quiet_since, w.t_end)]
        if w.t_end - self.last_update >= self.s.update_interval:
            self.last_update = w.t_end
            return [inc.updated(w.t_end)]
        return []

    def _resolve(self, ended_at: float, now: float) -> IncidentEvent:
        inc = self.incident
        assert inc is not None
        ev = inc.resolved(max(ended_at, inc.started_at))
        self.incident = None
        self.quiet_since = None
        self.cooldown_until = now + self.s.cooldown
        self.recent[inc.key] = inc
        while len(self.recent) > RECENT_KEEP:
            self.recent.popitem(last=False)
        return ev

    # -- end of stream, enrichment ------------------------------------------------------------------
    def finish(self, ts: float) -> list[IncidentEvent]:
        """A finite stream ended at packet time ts: resolve what is open.

        A run still being confirmed opens (and resolves) only when it reached `fast_ratio`: the file
        ended before another window could confirm a flood that far above the threshold.
        """
        events: list[IncidentEvent] = []
        if self.incident is None and self.run is not None and self.run.max_ratio >= self.s.fast_ratio:
            events.append(self._open(max(ts, self.run.profile.t_last)))
        if self.incident is not None:
            events.append(self._resolve(max(ts, self.incident.started_at), ts))
        self.run = None
        return events

    def enrich(self, key: str, subtype: str, iocs: list[Any], findings_path: str) -> IncidentEvent | None:
        """Merge the recorder's findings; the IncidentUpdated to publish (None for an unknown key)."""
        inc = self.incident if self.incident is not None and self.incident.key == key else self.recent.get(key)
        if inc is None:
            return None
        inc.enrich(subtype, iocs, findings_path)
        return inc.updated(inc.updated_at)
