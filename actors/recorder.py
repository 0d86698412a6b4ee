"""The recorder actor: a capture file per incident, announced on pcap.saved, then dissected off-loop.

Frames arrive on `bus.frames` (PULL, bound here) from the capture actor; incident events and the
remote config (IOC patterns) on the event bus. The logic lives in floodwatch/recorder/: `Sessions`
(ring, files, limits), `retention` (age, cap, free space), `jobs` (the dissection child processes).
See docs/recorder.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from floodwatch.config import Config
from floodwatch.messages import (
    ConfigReceived,
    FrameBatch,
    IncidentEnriched,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Message,
    PcapSaved,
    RecorderDrained,
    StreamEnded,
)
from floodwatch.paths import recorder_dir
from floodwatch.recorder import retention
from floodwatch.recorder.jobs import DissectJob, DissectQueue, JobResult, JobSpec
from floodwatch.recorder.retention import FINDINGS_SUFFIX
from floodwatch.recorder.sessions import Saved, Sessions
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.recorder import RecorderSettings

TICK = 1.0  # seconds between checks of deadlines and dissection children
IDLE_TICK = 60.0  # ... while no capture is open and no dissection waits (an incident makes it TICK at once)
FINDINGS_TOP = 10  # values per table carried in incident.enriched (the JSON file has more)


def compact(findings: dict[str, Any]) -> dict[str, Any]:
    """The findings for the bus: each table's top values only, without the summary (sent apart)."""
    out: dict[str, Any] = {}
    for k, v in findings.items():
        if k == "summary":
            continue
        out[k] = {**v, "top": v["top"][:FINDINGS_TOP]} if isinstance(v, dict) and "top" in v else v
    return out


class RecorderActor(Actor[RecorderSettings]):
    name = "recorder"
    subscribes = (IncidentOpened, IncidentUpdated, IncidentResolved, ConfigReceived)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        s = self.settings
        self.out_dir = recorder_dir(s, config.agent.state_dir)
        self.sessions = Sessions(s, self.out_dir, log=self.log)
        self.policy = retention.Policy(s.retention_days, s.max_total_bytes, s.min_free_bytes)
        self.queue = DissectQueue(self._job, s.dissect_queue)
        self.ioc_patterns: list[Any] = []
        self.counters.update({"dissected": 0, "dissect_failed": 0, "dissect_timeouts": 0, "retention_deleted": 0})
        self.saved = 0  # captures announced on pcap.saved
        self._ticking = False  # the tick runs every TICK (something is open or pending), else every IDLE_TICK
        self.count_from(self._counters, gauges=("ring_frames", "open_captures", "dissect_pending"))

    def on_start(self) -> None:
        s = self.settings
        try:
            self.out_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            stale = retention.remove_stale_parts(self.out_dir)
            if stale:
                self.log.warning("removed {} unfinished capture file(s) left by a crash", stale)
        except OSError as e:
            self.log.error("capture directory {} is not usable: {}", self.out_dir, e.strerror or e)
        self.pull(self.endpoints.frames, self._bulk, hwm=self.config.bus.hwm_frames)
        self.every(self._tick_period, self._tick)
        self.every(s.retention_interval, self._retention, first=0.0)
        self.log.info("captures go to {} ({}, ring {} frames)", self.out_dir, s.format, s.ring_packets)

    def on_message(self, msg: Message) -> None:
        if not self.settings.enabled:
            return
        if isinstance(msg, IncidentOpened):
            self.sessions.on_opened(msg.incident_key, msg.attack_subtype)
        elif isinstance(msg, IncidentUpdated):
            self.sessions.on_updated(msg.incident_key, msg.attack_subtype)
        elif isinstance(msg, IncidentResolved):
            self.sessions.on_resolved(msg.incident_key, msg.attack_subtype, msg.ended_at)
        elif isinstance(msg, ConfigReceived):
            self.ioc_patterns = list(msg.ioc_patterns)
        self._check_health()
        self._tick_soon()

    def on_stop(self) -> None:
        """Save open captures, and let dissections finish while the stop grace allows."""
        self._publish_saved(self.sessions.close_all())
        deadline = time.monotonic() + max(0.0, self.config.supervisor.stop_timeout - 1.0)
        while (self.queue.running or self.queue.waiting) and time.monotonic() < deadline:
            for res in self.queue.poll():
                self._dissected(res)
            time.sleep(0.02)
        self.queue.stop()
        self._check_health()

    # -- bulk frames -----------------------------------------------------------------------------
    def _bulk(self, msg: Message) -> None:
        if isinstance(msg, FrameBatch):
            if self.settings.enabled:
                self._publish_saved(self.sessions.on_frames(msg.frames, msg.linktype, msg.sample_rate))
        elif isinstance(msg, StreamEnded):
            self._publish_saved(self.sessions.on_stream_ended())
        else:
            self.counters["bad_messages"] += 1

    def _tick(self) -> None:
        self._publish_saved(self.sessions.tick())
        for res in self.queue.poll():
            self._dissected(res)
        self._check_health()

    def _busy(self) -> bool:
        return bool(self.sessions.active) or self._pending() > 0

    def _tick_period(self) -> float:
        """An idle recorder has no deadline to check: it does not wake every second for nothing."""
        self._ticking = self._busy()
        return TICK if self._ticking else IDLE_TICK

    def _tick_soon(self) -> None:
        """A capture opened or a dissection was queued while the tick slept: back to TICK from now."""
        if not self._ticking and self._busy():
            self._ticking = True
            self.due_now(self._tick)

    # -- saved files and their dissection --------------------------------------------------------
    def _publish_saved(self, saved: list[Saved]) -> None:
        self.saved += len(saved)
        for item in saved:
            cap = item.capture
            self.publish(PcapSaved(incident_key=item.key, path=cap.path, packets=cap.packets, bytes=cap.bytes,
                                   linktype=cap.linktype, sha256=cap.sha256, sample_rate=cap.sample_rate,
                                   truncated=cap.truncated))
            self.log.info("incident {}: saved {} ({} packets, {} bytes{})", item.key, cap.path, cap.packets,
                          cap.bytes, ", truncated at a limit" if cap.truncated else "")
            if self.settings.dissect:
                findings = str(Path(cap.path).with_suffix("")) + FINDINGS_SUFFIX
                self.queue.submit(JobSpec(item.key, cap.path, findings, item.subtype, self.ioc_patterns))
                self._tick_soon()
        if saved:
            self._retention(keep=frozenset(Path(i.capture.path).stem for i in saved))
            self._check_health()

    def _job(self, spec: JobSpec) -> DissectJob:
        s = self.settings
        return DissectJob(spec, s.tshark_path, s.dissect_timeout, s.dissect_memory_mb, s.file_mode,
                          s.subtype_min_packets, s.subtype_min_share, s.dissect_user)

    def _dissected(self, res: JobResult) -> None:
        key = res.spec.incident_key
        if not res.ok or res.findings is None:
            self.counters["dissect_timeouts" if res.timed_out else "dissect_failed"] += 1
            self.log.error("incident {}: dissection of {} failed: {}", key, res.spec.pcap, res.error)
            return
        self.counters["dissected"] += 1
        summary = res.findings.get("summary", {})
        self.publish(IncidentEnriched(incident_key=key, attack_subtype=str(summary.get("attack_subtype", "")),
                                      ioc_matches=list(summary.get("ioc_matches", [])),
                                      findings={**compact(res.findings), "verdict": summary.get("verdict", "")},
                                      findings_path=res.spec.out))
        self.log.info("incident {}: dissected in {:.1f} s, subtype {} ({}), {} IOC match(es)", key, res.elapsed,
                      summary.get("attack_subtype") or "-", summary.get("verdict"), len(summary.get("ioc_matches", [])))

    def _retention(self, keep: frozenset[str] = frozenset()) -> None:
        stored = retention.scan(self.out_dir)
        busy = [*self.queue.waiting, *([self.queue.running.spec] if self.queue.running else [])]
        keep = keep | frozenset(Path(spec.pcap).stem for spec in busy)
        doomed = retention.plan(stored, time.time(), self.policy, retention.free_bytes(self.out_dir), keep)
        if not doomed:
            return
        files, freed, errors = retention.remove(doomed)
        self.counters["retention_deleted"] += files
        self.log.info("retention: deleted {} file(s), {} bytes, oldest first", files, freed)
        for err in errors[:5]:
            self.log.error("retention: cannot delete {}", err)

    def _pending(self) -> int:
        return len(self.queue.waiting) + int(self.queue.running is not None)

    def _unsaved(self) -> int:
        c = self.sessions.counters  # incidents that got no file, whatever the reason
        return c["write_errors"] + c["skipped_busy"] + c["skipped_low_disk"] + c["empty_recordings"]

    def _counters(self) -> dict[str, int]:
        return {**self.sessions.counters, "ring_frames": len(self.sessions.ring),
                "open_captures": len(self.sessions.active), "dissect_dropped": self.queue.dropped,
                "dissect_pending": self._pending(), "unsaved": self._unsaved()}

    def drained(self) -> RecorderDrained | None:
        return None if self._pending() else RecorderDrained(saved=self.saved, unsaved=self._unsaved())

    def _check_health(self) -> None:
        err = self.sessions.last_error
        self.health = f"last capture failed: {err}"[:200] if err else "ok"


def main(argv: list[str] | None = None) -> int:
    return run_actor(RecorderActor, argv)


if __name__ == "__main__":
    sys.exit(main())
