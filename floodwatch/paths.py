"""The state-directory layout: where every actor keeps its files, in one place.

Each function takes the section that may override a path and `[agent] state_dir` (the default
/var/lib/floodwatch, 0700). Actors that must agree on a file (the apiserver writes this host's node
credentials, the reporter reads them; the recorder writes pcaps, the reporter uploads only from there)
call the same function. No heavy imports: the CLI and the supervisor use it.

    <state_dir>/
      pcaps/                      recorder captures and their findings   [recorder] output_dir
      detector/baseline.json      detector baselines (relative)          [detector] baseline_file
      executor.sqlite3            executor ledger                        [executor] ledger_file
      executor-audit.jsonl        executor audit log ("-": none)         [executor] audit_file
      reporter/outbox.sqlite      reporter outbox                        [reporter] outbox_path
      server.db, server-pcaps/    embedded API server                    [apiserver] db_path, pcap_dir
      server-local-node.json      this host's node credentials ("-": none) [apiserver] local_node_file
      weblog/offsets.json         access-log positions (relative)        [weblog] state_file
      detector/http_baseline.json http_flood baselines (relative)        [weblog.detect] baseline_file
"""

from __future__ import annotations

from pathlib import Path

from floodwatch.settings.apiserver import ApiserverSettings
from floodwatch.settings.detector import DetectorSettings
from floodwatch.settings.executor import ExecutorSettings
from floodwatch.settings.recorder import RecorderSettings
from floodwatch.settings.reporter import ReporterSettings
from floodwatch.settings.weblog import HttpDetectSettings, WeblogSettings

OFF = "-"  # a file setting that turns the file off


def recorder_dir(s: RecorderSettings, state_dir: str | Path) -> Path:
    """The recorder's captures; the reporter uploads only files under it."""
    return Path(s.output_dir) if s.output_dir else Path(state_dir) / "pcaps"


def baseline_file(s: DetectorSettings, state_dir: str | Path) -> Path:
    return Path(state_dir) / s.baseline_file


def executor_files(s: ExecutorSettings, state_dir: str | Path) -> tuple[Path, Path | None]:
    """(ledger database, JSON-lines audit file or None)."""
    state = Path(state_dir)
    audit = None if s.audit_file == OFF else Path(s.audit_file or state / "executor-audit.jsonl")
    return Path(s.ledger_file or state / "executor.sqlite3"), audit


def reporter_outbox(s: ReporterSettings, state_dir: str | Path) -> Path:
    return Path(s.outbox_path) if s.outbox_path else Path(state_dir) / "reporter" / "outbox.sqlite"


def server_files(s: ApiserverSettings, state_dir: str | Path) -> tuple[Path, Path]:
    """(database file, pcap directory) of the embedded server."""
    db = Path(s.db_path or Path(state_dir) / "server.db")
    pcaps = Path(s.pcap_dir) if s.pcap_dir else db.parent / f"{db.stem}-pcaps"
    return db, pcaps


def local_node_file(s: ApiserverSettings, state_dir: str | Path) -> Path | None:
    """Where the embedded server leaves this host's node credentials (0600) for the reporter, or None."""
    if s.local_node_file == OFF:
        return None
    return Path(s.local_node_file or Path(state_dir) / "server-local-node.json")


def weblog_positions(s: WeblogSettings, state_dir: str | Path) -> Path:
    """Where the weblog actor keeps each log's position (inode, offset, head) across restarts."""
    return Path(state_dir) / s.state_file


def http_baseline_file(s: HttpDetectSettings, state_dir: str | Path) -> Path:
    return Path(state_dir) / s.baseline_file
