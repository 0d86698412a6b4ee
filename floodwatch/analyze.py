"""`floodwatch analyze FILE`: run the real actors on a capture file and print what they saw.

The supervisor runs in this process (its proxy and control socket), the actors as real processes on
ipc sockets in a private temporary directory: capture (pcap source, the file's timestamps as the clock),
aggregator and detector, plus the reporter (--report-to) and the recorder (--pcap-dir). Results do not
depend on the machine's speed: windows are cut by packet time and the file source never drops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from floodwatch import bus, messages, tomlw
from floodwatch.config import load_config
from floodwatch.errors import BusError, ConfigError
from floodwatch.logs import setup_logging
from floodwatch.messages import (
    AnalysisFinished,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Message,
    PcapSaved,
    QuietWindows,
    RecorderDrained,
    ReporterDrained,
    StreamEnded,
    TrafficSummary,
    TrafficWindow,
)
from floodwatch.runtime.supervisor.core import Outcome, Supervisor
from floodwatch.settings.core import LogSettings

EVENT_NAMES = {IncidentOpened: "opened", IncidentUpdated: "updated", IncidentResolved: "resolved"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("analyze", help="run the actors on a pcap/pcapng file and print what they saw")
    p.add_argument("file", help="a pcap or pcapng capture")
    p.add_argument("--json", action="store_true", help="JSON lines: incident events, then the summary")
    p.add_argument("--speed", type=float, default=0.0,
                   help="replay speed: 0 = as fast as possible (default), 1 = recorded speed, N = N times faster")
    p.add_argument("--pps-threshold", type=int, default=None, help="static packets/s threshold for this run")
    p.add_argument("--bps-threshold", type=int, default=None, help="static bits/s threshold for this run")
    p.add_argument("--classify", action="store_true",
                   help="fingerprint the whole capture as one attack, regardless of thresholds")
    p.add_argument("--flows", action="store_true",
                   help="the file holds sFlow/NetFlow/IPFIX export traffic (found by itself when most of it is)")
    p.add_argument("--local-net", action="append", default=[], metavar="CIDR",
                   help="the host's own networks (decides in/out); default: every packet counts as inbound")
    p.add_argument("--pcap-dir", default=None, help="also write each incident's capture file here")
    p.add_argument("--report-to", default=None, metavar="URL", help="deliver the incidents to this API")
    p.add_argument("--api-key", default=None, help="API key for --report-to (or $FLOODWATCH_API_KEY)")
    p.add_argument("--node-uuid", default=None, help="node UUID for --report-to")
    p.add_argument("--ca-bundle", default=None, help="CA bundle to verify the API's TLS certificate")
    p.add_argument("--flush-timeout", type=float, default=60.0,
                   help="seconds to wait for reports and captures to be delivered (default 60)")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    p.add_argument("--verbose", action="store_true", help="show the actors' logs")
    p.set_defaults(func=run)


def analysis_config(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """The config of one analysis run: private dirs, ipc endpoints, a file source."""
    flows = args.flows or _flow_export(args.file)
    actors = ["collector" if flows else "capture", "aggregator", "detector"]
    cfg: dict[str, dict[str, Any]] = {
        "agent": {"state_dir": str(tmp / "state"), "runtime_dir": str(tmp / "run")},
        "supervisor": {
            "actors": actors,
            "critical": actors[:],
            "heartbeat_interval": 0.25,
            "heartbeat_timeout": 60.0,
            "flap_max_restarts": 0,  # one failure is the answer: never re-read the file
            "stop_timeout": 10.0,
        },
        "log": {"level": "INFO" if args.verbose else "WARNING"},
        "capture": {"source": "pcap", "pcap_file": str(Path(args.file).resolve()), "speed": args.speed,
                    "local_networks": list(args.local_net)},
        "detector": {},
    }
    if flows:  # the routers' datagrams: the protected networks are --local-net (empty: every flow counts)
        del cfg["capture"]
        cfg["collector"] = {"enabled": True, "pcap_file": str(Path(args.file).resolve()),
                            "networks": list(args.local_net)}
    if args.pps_threshold is not None:
        cfg["detector"]["pps_threshold"] = args.pps_threshold
    if args.bps_threshold is not None:
        cfg["detector"]["bps_threshold"] = args.bps_threshold
    if not args.pcap_dir:  # raw frames go only to the recorder: without one, none are made
        cfg["collector" if flows else "capture"]["frames_per_second"] = 0
    if args.pcap_dir:
        actors.append("recorder")
        cfg["recorder"] = {"output_dir": str(Path(args.pcap_dir).resolve())}
    if args.report_to:
        actors.append("reporter")
        cfg["supervisor"]["critical"].append("reporter")
        # every sample at once: the run ends when the outbox is empty, not a quiet interval later
        rep: dict[str, Any] = {"url": args.report_to, "node_uuid": args.node_uuid or "", "metrics_interval": 0.0}
        key = args.api_key or os.environ.get("FLOODWATCH_API_KEY", "")
        if key:
            key_file = tmp / "api-key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key)
            rep["api_key_file"] = str(key_file)
        if args.ca_bundle:
            rep["ca_bundle"] = args.ca_bundle
        cfg["reporter"] = rep
    return cfg


def _flow_export(path: str) -> bool:
    from floodwatch.collector.pcapsource import looks_like_flow_export
    from floodwatch.errors import CaptureError

    try:
        return looks_like_flow_export(path)
    except (CaptureError, OSError):
        return False  # the capture actor reports the file's problem


class Analysis:
    """One run: the supervisor in this process, a SUB on the bus, and what was heard."""

    def __init__(self, args: argparse.Namespace, config_path: Path) -> None:
        self.args = args
        self.config = load_config(config_path)
        self.sup = Supervisor(str(config_path), self.config, env={}, page_out=False)
        self.summary: TrafficSummary | None = None
        self.finished: AnalysisFinished | None = None
        self.stream_error = ""
        self.incidents: dict[str, dict[str, Any]] = {}
        self.incident_events = 0
        self.windows: list[TrafficWindow] = []
        self.pcaps: dict[str, PcapSaved] = {}
        self.pcap_events = 0
        self.recorder: RecorderDrained | None = None
        self.reporter: ReporterDrained | None = None
        self.flush_deadline: float | None = None
        self.stop = False

    def connect(self) -> zmq.Socket:
        """Our SUB on the supervisor's bus (never dropping: we are the one reading the results), once it
        is known to receive."""
        ep = self.sup.endpoints
        topics: list[type[Message]] = [IncidentOpened, IncidentUpdated, IncidentResolved, TrafficSummary, StreamEnded,
                                       AnalysisFinished, PcapSaved, RecorderDrained, ReporterDrained]
        if self.args.classify:
            topics += [TrafficWindow, QuietWindows]
        sub = bus.sub(self.sup.ctx, ep, [cls.TOPIC for cls in topics] + ["analyze.probe"], hwm=0)
        pub = bus.pub(self.sup.ctx, ep, hwm=1000)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:  # wait until our subscription is live at the proxy
                pub.send_multipart([b"analyze.probe", b""])
                if sub.poll(bus.PROBE_EVERY_MS, zmq.POLLIN) and sub.recv_multipart()[0] == b"analyze.probe":
                    return sub
            sub.close(0)
            raise BusError("the analysis could not subscribe to its own event bus")
        finally:
            pub.close(0)

    def on_event(self, msg: Message) -> None:
        if isinstance(msg, IncidentEvent):
            self.incident_events += 1
            fields = msg.to_dict()
            self.incidents[msg.incident_key] = fields
            if self.args.json:
                emit({"type": "incident", "event": EVENT_NAMES[type(msg)], **fields})
        elif isinstance(msg, TrafficSummary):
            self.summary = msg
        elif isinstance(msg, StreamEnded) and msg.error:
            self.stream_error = msg.error
        elif isinstance(msg, AnalysisFinished):
            self.finished = msg
        elif isinstance(msg, PcapSaved):
            self.pcap_events += 1
            self.pcaps[msg.incident_key] = msg
        elif isinstance(msg, TrafficWindow):
            self.windows.append(msg)
        elif isinstance(msg, QuietWindows):
            self.windows += msg.windows()
        elif isinstance(msg, RecorderDrained):
            self.recorder = msg
        elif isinstance(msg, ReporterDrained):
            self.reporter = msg

    def run(self, sub: zmq.Socket) -> int:
        outcome = self.sup.run_until(lambda: self.over(sub), self.args.timeout, wake_on=[sub])
        if self.stream_error:
            print(f"floodwatch analyze: {self.stream_error}", file=sys.stderr)
            return 1
        if outcome is Outcome.FAILED:
            print(f"floodwatch analyze: actor(s) failed: {', '.join(self.sup.failed())} (run with --verbose)",
                  file=sys.stderr)
            return 1
        if self.stop or outcome is Outcome.TIMED_OUT:
            if not self.stop:
                print("floodwatch analyze: timed out", file=sys.stderr)
            return 1
        self.print_results()
        return 0 if self.delivered() else 4

    def over(self, sub: zmq.Socket) -> bool:
        """Read what arrived; True once the run is over: stopped, failed, or finished and delivered (or
        out of time to deliver)."""
        while sub.poll(0, zmq.POLLIN):
            parts = sub.recv_multipart()
            if parts[0] != b"analyze.probe":
                self.on_event(messages.decode_frames(parts))
        if self.stop or self.stream_error:
            return True
        if self.finished is None or self.summary is None:
            return False
        if self.flush_deadline is None:
            self.flush_deadline = time.monotonic() + self.args.flush_timeout
        return self.delivered() or time.monotonic() > self.flush_deadline

    def delivered(self) -> bool:
        """Captures written and reports acknowledged, when those were asked for: the recorder's and the
        reporter's drain events that cover every incident and capture event heard here."""
        if self.args.pcap_dir:
            rec = self.recorder
            if rec is None or rec.saved < self.pcap_events:
                return False
            if len(set(self.incidents) - set(self.pcaps)) > rec.unsaved:
                return False
        if self.args.report_to:
            rep = self.reporter
            if rep is None or rep.incident_events < self.incident_events or rep.pcaps < self.pcap_events:
                return False
        return True

    def print_results(self) -> None:
        classification = self.classify() if self.args.classify else None
        summary = summary_dict(self.summary) if self.summary else {}
        if self.args.json:
            if classification is not None:
                emit({"type": "classification", **classification})
            emit({"type": "summary", **summary, "incidents": len(self.incidents)})
            return
        print_human(summary, list(self.incidents.values()), classification, self.pcaps)

    def classify(self) -> dict[str, Any]:
        from floodwatch.detect.classify import classify_capture

        return dict(classify_capture(self.windows))


def summary_dict(s: TrafficSummary) -> dict[str, Any]:
    d = s.to_dict()
    extra = d.pop("extra", {}) or {}
    d.update({k: v for k, v in extra.items() if k not in d})
    return d


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def print_human(summary: dict[str, Any], incidents: list[dict[str, Any]],
                classification: dict[str, Any] | None, pcaps: dict[str, PcapSaved]) -> None:
    span = max(0.0, float(summary.get("t_last", 0)) - float(summary.get("t_first", 0)))
    print(f"packets {summary.get('packets', 0):,}  bytes {summary.get('bytes', 0):,}  span {span:.3f} s")
    print(f"protocols {summary.get('protocols', {})}")
    exact = "exact" if summary.get("source_ip_count_exact") else "estimated"
    print(f"distinct sources {summary.get('source_ip_count', 0):,} ({exact})")
    print("top sources: " + ", ".join(f"{x['ip']} ({x['count']})" for x in summary.get("top_src_ips", [])[:10]))
    print("top destination ports: " + ", ".join(
        f"{x.get('port')}/{x.get('proto', '')} ({x['count']})" for x in summary.get("top_dst_ports", [])[:10]))
    if classification:
        print(f"classification: {classification.get('attack_family')} / {classification.get('attack_subtype')}"
              f" (confidence {classification.get('confidence')}, spoofing {classification.get('spoofing_detected')})")
    for inc in incidents:
        pcap = pcaps.get(inc["incident_key"])
        print(f"incident {inc['incident_key'][:8]} {inc['status']}: {inc['attack_family']} / "
              f"{inc['attack_subtype']} severity {inc['severity']} peak {inc['peak_pps']:,} pps"
              + (f" pcap {pcap.path}" if pcap else ""))


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"floodwatch analyze: {path}: no such file", file=sys.stderr)
        return 2
    if args.report_to and not args.node_uuid:
        print("floodwatch analyze: --report-to needs --node-uuid (and --api-key)", file=sys.stderr)
        return 2
    setup_logging(LogSettings(level="INFO" if args.verbose else "WARNING"), "analyze")
    with tempfile.TemporaryDirectory(prefix="floodwatch-analyze-") as d:
        tmp = Path(d)
        os.chmod(tmp, 0o700)
        config_path = tmp / "analyze.toml"
        config_path.write_text(tomlw.dumps(analysis_config(args, tmp)))
        try:
            analysis = Analysis(args, config_path)
        except ConfigError as e:
            print(f"floodwatch analyze: {e}", file=sys.stderr)
            return 2

        def stop(*_: Any) -> None:
            analysis.stop = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        with analysis.sup:
            sub = analysis.connect()
            try:
                return analysis.run(sub)
            finally:
                sub.close(0)
