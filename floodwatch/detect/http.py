"""HTTP floods from web server logs: weblog.window -> http_flood incidents (pure: window time only).

Same principles as the packet detector (floodwatch/detect/evaluate.py): a learnt hour-of-week baseline
of requests/s (floodwatch.detect.baseline.Baseline, its pps axis carrying requests/s) for the host and
for each site, never below `floor_rps`; a window at `fast_ratio` x the threshold opens at once, a rate
over it for `sustain_seconds` opens too; resolved after `hold_down` s under `resolve_ratio`, then a
`cooldown`. Nothing is learnt during a run, an incident or a cooldown.

A flood from few versus a crowd (a sale, a launch): over the threshold, a window counts towards a flood
only when its top 10 clients carry `concentration` of the requests, or the mean rate per distinct client
over the last `client_horizon` seconds (requests / the union of the windows' HyperLogLogs: one short
window would make every client look fast) is `client_rps` or more. Many clients each at a human rate
is a crowd: counted (`crowd_windows`), never an incident. A flood spread over thousands of addresses at
a few requests/s each looks like a crowd here; that is the limit of what logs alone can tell.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floodwatch.aggregate.hll import HyperLogLog
from floodwatch.detect.baseline import Baseline, BaselineError
from floodwatch.detect.http_incident import Evidence, HttpIncident
from floodwatch.detect.incident import HoldDown
from floodwatch.messages import IncidentEvent, WebWindow
from floodwatch.server.paths import write_private
from floodwatch.settings.weblog import HttpDetectSettings

MAX_SITES = 32  # sites with a baseline of their own (the others count in the host's)
NO_BPS = 1e18  # the baseline's bps axis is unused


@dataclass
class HttpRun:
    start: float
    threshold: float
    source: str
    trigger: str
    evidence: Evidence = field(default_factory=Evidence)
    peak_rps: float = 0.0
    gaps: int = 0


class HttpDetector:
    def __init__(self, settings: HttpDetectSettings) -> None:
        self.s = settings
        self.host = self._baseline()
        self.sites: dict[str, Baseline] = {}
        self.incident: HttpIncident | None = None
        self.run: HttpRun | None = None
        self.hold = HoldDown(settings.hold_down, settings.cooldown, settings.update_interval)
        self.recent: deque[tuple[float, int, float, bytes]] = deque(maxlen=256)
        self.counters = {"web_windows": 0, "http_incidents": 0, "crowd_windows": 0, "http_bursts_ignored": 0}

    def _baseline(self) -> Baseline:
        s = self.s
        return Baseline(s.floor_rps, NO_BPS, s.multiplier, s.mean_multiplier, s.min_learn_seconds)

    def ratio(self, w: WebWindow) -> tuple[float, float, str, str]:
        """(ratio, threshold, its source, trigger) of the window's most loaded scope."""
        seconds = max(w.t_end - w.t_start, 1e-3)
        thr = self.host.thresholds(w.t_end)
        best = (w.requests / seconds / thr.pps, thr.pps, thr.source, "host")
        for row in w.top_sites:
            name, n = str(row[0]), int(row[1])
            base = self.sites.get(name)
            if base is None:
                continue  # a site not learnt yet is judged with the host
            t = base.thresholds(w.t_end)
            if n / seconds / t.pps > best[0]:
                best = (n / seconds / t.pps, t.pps, t.source, f"site {name}")
        return best

    def note_clients(self, w: WebWindow) -> None:
        """Keep the recent windows' requests and client sketches (the last client_horizon seconds)."""
        self.recent.append((w.t_end, w.requests, max(w.t_end - w.t_start, 1e-3), w.client_hll))
        while self.recent and self.recent[0][0] <= w.t_end - self.s.client_horizon:
            self.recent.popleft()

    def client_rate(self) -> float:
        """Mean requests/s per distinct client over the recent windows."""
        hll: HyperLogLog | None = None
        for _, _, _, regs in self.recent:
            try:
                other = HyperLogLog.from_bytes(regs)
            except ValueError:
                continue
            if hll is None:
                hll = other
            elif hll.p == other.p:
                hll.merge(other)
        clients = hll.estimate() if hll is not None else 0
        seconds = sum(r[2] for r in self.recent) or 1e-3
        return sum(r[1] for r in self.recent) / seconds / max(clients, 1)

    def flood_shaped(self, w: WebWindow) -> bool:
        """Few clients carry it: concentrated, or each client far faster than a person."""
        top = sum(int(r[1]) for r in w.top_clients[:10] if isinstance(r, list | tuple) and len(r) == 2)
        if w.requests > 0 and top / w.requests >= self.s.concentration:
            return True
        return self.client_rate() >= self.s.client_rps

    def learn(self, w: WebWindow) -> None:
        seconds = max(w.t_end - w.t_start, 1e-3)
        self.host.learn(w.t_end, w.requests / seconds, 0.0, seconds)
        for row in w.top_sites:
            name = str(row[0])
            if name not in self.sites and len(self.sites) < MAX_SITES:
                self.sites[name] = self._baseline()
            if name in self.sites:
                self.sites[name].learn(w.t_end, int(row[1]) / seconds, 0.0, seconds)

    def step(self, w: WebWindow) -> list[IncidentEvent]:
        self.counters["web_windows"] += 1
        self.note_clients(w)
        if self.incident is not None:
            return self._step_active(w)
        ratio, thr, source, trigger = self.ratio(w)
        if ratio >= 1.0 and not self.flood_shaped(w):
            self.counters["crowd_windows"] += 1
            ratio = 0.0 if self.run is None else ratio  # a crowd starts nothing (and teaches nothing)
            if self.run is None:
                return []
        if ratio >= 1.0:
            return self._step_over(w, ratio, thr, source, trigger)
        if self.run is not None:
            self.run.gaps += 1
            if self.run.gaps > 1:
                self.counters["http_bursts_ignored"] += 1
                self.run = None
            return []
        if w.t_end >= self.hold.cooldown_until:
            self.learn(w)
        return []

    def _step_over(self, w: WebWindow, ratio: float, thr: float, source: str, trigger: str) -> list[IncidentEvent]:
        if self.run is None:
            self.run = HttpRun(w.t_start, thr, source, trigger)
        run = self.run
        run.gaps = 0
        run.evidence.add(w)
        run.peak_rps = max(run.peak_rps, w.requests / max(w.t_end - w.t_start, 1e-3))
        fast = ratio >= self.s.fast_ratio
        sustained = w.t_end - run.start >= self.s.sustain_seconds
        if (fast or sustained) and w.t_end >= self.hold.cooldown_until:
            inc = HttpIncident(run.start, run.threshold, run.source, run.trigger, self.s, run.evidence)
            inc.peak_rps = run.peak_rps
            self.incident, self.run = inc, None
            self.hold.opened(w.t_end)
            self.counters["http_incidents"] += 1
            return [inc.opened(w.t_end)]
        return []

    def _step_active(self, w: WebWindow) -> list[IncidentEvent]:
        inc = self.incident
        assert inc is not None
        seconds = max(w.t_end - w.t_start, 1e-3)
        rps = w.requests / seconds
        loud = rps >= self.s.resolve_ratio * inc.threshold_rps
        if loud:
            inc.evidence.add(w)
            inc.peak_rps = max(inc.peak_rps, rps)
        ev = self.hold.step(inc, loud, w.t_start, w.t_end)
        if inc.status == "resolved":
            self.incident = None
        return [ev] if ev is not None else []

    # -- persistence (the detector actor's state directory) ------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"host": self.host.to_json(), "sites": {n: b.to_json() for n, b in self.sites.items()}}

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json(), separators=(",", ":")))

    def load(self, path: Path) -> bool:
        """The saved baselines; False when there are none. BaselineError when unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as e:
            raise BaselineError(f"{path}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("sites", {}), dict):
            raise BaselineError(f"{path}: not an http baseline")
        self.host.load_json(data.get("host"))
        for name, d in list(data.get("sites", {}).items())[:MAX_SITES]:
            base = self._baseline()
            base.load_json(d)
            self.sites[str(name)] = base
        return True
