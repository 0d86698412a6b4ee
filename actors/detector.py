"""The detector actor: traffic.window -> incident.opened / updated / resolved.

Thin adapter around floodwatch.detect.evaluate.Detector (pure logic, window time only). It also takes
the API's config (thresholds, baseline), merges the recorder's findings (incident.enriched), finishes
finite streams (stream.ended -> resolve -> analysis.finished) and keeps the learnt baseline in the
state directory. `python -m actors.detector --config FILE`.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from floodwatch.capture.ifstats import interface_addresses, resolve_interfaces
from floodwatch.config import Config
from floodwatch.detect.baseline import BaselineError
from floodwatch.detect.evaluate import Detector
from floodwatch.detect.exporters import ExporterMap
from floodwatch.detect.http import HttpDetector
from floodwatch.detect.tls import TlsDetector
from floodwatch.errors import CaptureError
from floodwatch.messages import (
    AnalysisFinished,
    ConfigReceived,
    ExporterTraffic,
    IncidentEnriched,
    IncidentEvent,
    Message,
    QuietWindows,
    StreamEnded,
    TrafficWindow,
    WebWindow,
)
from floodwatch.paths import baseline_file, http_baseline_file
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.detector import DetectorSettings

MAX_HOST_ADDRESSES = 16


class DetectorActor(Actor[DetectorSettings]):
    name = "detector"
    subscribes = (TrafficWindow, QuietWindows, ConfigReceived, IncidentEnriched, StreamEnded, WebWindow,
                  ExporterTraffic)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.detector = Detector(self.settings, groups=self.config.hostgroup)
        self.baseline_path = baseline_file(self.settings, config.agent.state_dir)
        self.counters.update({"baseline_errors": 0, "enrich_unknown": 0})
        self.count_from(self._detector_counters)
        self._dirty = False
        # http floods from the weblog actor's windows (floodwatch/detect/http.py): a state machine of its own
        self.http = HttpDetector(config.weblog.detect)
        self.http_baseline_path = http_baseline_file(config.weblog.detect, config.agent.state_dir)
        self.count_from(lambda: dict(self.http.counters))
        # new TLS connections from the aggregator's windows (floodwatch/detect/tls.py)
        self.tls = TlsDetector(self.settings, tuple(config.aggregator.tls_ports))
        self.count_from(lambda: dict(self.tls.counters))
        self.exporters = ExporterMap()  # network mode: the routers that saw each victim

    def host_addresses(self) -> list[str]:
        """The host's own addresses (the capture interfaces', else the configured local networks): the
        target of an attack whose frames name none."""
        cap = self.config.capture
        nets = [n.removesuffix("/32").removesuffix("/128") for n in cap.local_networks]
        if cap.source == "pcap":
            return nets[:MAX_HOST_ADDRESSES]
        try:
            names = resolve_interfaces(cap.interfaces)
        except CaptureError:
            return nets[:MAX_HOST_ADDRESSES]
        found = [a for n in names for a in interface_addresses(n) if not a.lower().startswith("fe80:")]
        return (found or nets)[:MAX_HOST_ADDRESSES]

    def on_start(self) -> None:
        self.detector.host_addresses = self.host_addresses()
        try:
            if self.detector.baseline.load(self.baseline_path):
                self.log.info("baseline loaded from {}", self.baseline_path)
        except BaselineError as e:
            self.counters["baseline_errors"] += 1
            self.log.warning("baseline not loaded, learning afresh: {}", e)
        if self.config.weblog.enabled:
            try:
                self.http.load(self.http_baseline_path)
            except BaselineError as e:
                self.counters["baseline_errors"] += 1
                self.log.warning("http baseline not loaded, learning afresh: {}", e)
        if self.settings.dynamic and self.settings.baseline_save_interval > 0:
            self.every(self.settings.baseline_save_interval, self.save_baseline)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, TrafficWindow):
            self.on_window(msg)
        elif isinstance(msg, QuietWindows):  # a silent link's windows, one message every second or few
            if self.detector.incident or self.detector.run or self.tls.incident or self.tls.run:
                for w in msg.windows():  # the incidents' events in window order, as they would come
                    self.on_window(w)
            else:
                self.on_quiet(msg.windows())
        elif isinstance(msg, ExporterTraffic):
            self.exporters.note(msg.pairs, time.time())
            self.update_exporters()
        elif isinstance(msg, WebWindow):
            self.emit(self.http.step(msg))
        elif isinstance(msg, ConfigReceived):
            self.detector.set_api_config(msg.pps_threshold, msg.bps_threshold, msg.baseline)
            self.log.info("API config: pps_threshold={} bps_threshold={} baseline={}",
                          msg.pps_threshold, msg.bps_threshold, sorted(msg.baseline))
        elif isinstance(msg, IncidentEnriched):
            ev = self.detector.enrich(msg.incident_key, msg.attack_subtype, msg.ioc_matches, msg.findings_path)
            if ev is None:
                self.counters["enrich_unknown"] += 1
            else:
                self.emit([ev])
        elif isinstance(msg, StreamEnded):
            self.emit(self.detector.finish(msg.ts))
            self.publish(AnalysisFinished(source=msg.source, packets=msg.packets,
                                          incidents=self.detector.counters["incidents"]))

    def on_window(self, w: TrafficWindow) -> None:
        before = self.detector.counters["learnt_windows"]
        self.emit(self.detector.step(w))
        self.emit(self.tls.step(w))
        self._dirty = self._dirty or self.detector.counters["learnt_windows"] != before

    def on_quiet(self, windows: list[TrafficWindow]) -> None:
        """on_window for each, in bulk where nothing can happen (Detector.step_quiet, TlsDetector.step_quiet)."""
        before = self.detector.counters["learnt_windows"]
        self.emit(self.detector.step_quiet(windows))
        self.emit(self.tls.step_quiet(windows))
        self._dirty = self._dirty or self.detector.counters["learnt_windows"] != before

    def _detector_counters(self) -> dict[str, int]:
        c = self.detector.counters
        return {k: c[k] for k in ("windows", "incidents", "learnt_windows", "bursts_ignored", "exempt_packets")}

    def update_exporters(self) -> None:
        """Network mode: an incident that opened before the collector's pairs named the routers that saw its
        victims gets an update naming them."""
        for key in self.exporters.grown(time.time()):
            inc = next((i for i in (self.detector.incident, self.tls.incident, self.http.incident)
                        if i is not None and i.key == key and i.status == "active"), None)
            if inc is None:
                self.exporters.forget(key)
            else:
                self.emit([inc.updated(inc.updated_at)])

    def emit(self, events: list[IncidentEvent]) -> None:
        for ev in events:
            named = self.exporters.name(ev.incident_key, ev.target_ips, ev.status == "active", time.time())
            if named:
                ev = dataclasses.replace(ev, exporters=named)
            self.publish(ev)
            self.log.info("{} {} {}/{} peak {} pps (seq {})", ev.TOPIC, ev.incident_key, ev.attack_family,
                          ev.attack_subtype, ev.peak_pps, ev.seq)

    def save_baseline(self) -> None:
        if self.config.weblog.enabled:
            try:
                self.http.save(self.http_baseline_path)
            except OSError as e:
                self.counters["baseline_errors"] += 1
                self.log.warning("cannot save the http baseline to {}: {}", self.http_baseline_path, e)
        if not self._dirty:
            return
        try:
            self.detector.baseline.save(self.baseline_path)
            self._dirty = False
        except OSError as e:
            self.counters["baseline_errors"] += 1
            self.log.warning("cannot save the baseline to {}: {}", self.baseline_path, e)

    def on_stop(self) -> None:
        if self.settings.dynamic:
            self.save_baseline()


def main(argv: list[str] | None = None) -> int:
    return run_actor(DetectorActor, argv)


if __name__ == "__main__":
    sys.exit(main())
