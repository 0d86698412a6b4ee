"""The state-directory layout (floodwatch/paths.py): defaults under [agent] state_dir, section overrides."""

from __future__ import annotations

from pathlib import Path

from floodwatch import paths
from floodwatch.config import config_from_dict


def test_every_file_defaults_under_the_state_directory() -> None:
    c = config_from_dict({"agent": {"state_dir": "/srv/fw"}})
    state = c.agent.state_dir
    assert paths.recorder_dir(c.recorder, state) == Path("/srv/fw/pcaps")
    assert paths.baseline_file(c.detector, state) == Path("/srv/fw/detector/baseline.json")
    assert paths.executor_files(c.executor, state) == (Path("/srv/fw/executor.sqlite3"),
                                                       Path("/srv/fw/executor-audit.jsonl"))
    assert paths.reporter_outbox(c.reporter, state) == Path("/srv/fw/reporter/outbox.sqlite")
    assert paths.server_files(c.apiserver, state) == (Path("/srv/fw/server.db"), Path("/srv/fw/server-pcaps"))
    assert paths.local_node_file(c.apiserver, state) == Path("/srv/fw/server-local-node.json")


def test_sections_override_their_files_and_dash_turns_a_file_off() -> None:
    c = config_from_dict({
        "agent": {"state_dir": "/srv/fw"},
        "recorder": {"output_dir": "/data/pcaps"},
        "executor": {"ledger_file": "/db/ledger.sqlite3", "audit_file": "-"},
        "reporter": {"outbox_path": "/q/outbox.sqlite"},
        "apiserver": {"db_path": "/db/api.sqlite", "local_node_file": "-"},
    })
    state = c.agent.state_dir
    assert paths.recorder_dir(c.recorder, state) == Path("/data/pcaps")
    assert paths.executor_files(c.executor, state) == (Path("/db/ledger.sqlite3"), None)
    assert paths.reporter_outbox(c.reporter, state) == Path("/q/outbox.sqlite")
    assert paths.server_files(c.apiserver, state) == (Path("/db/api.sqlite"), Path("/db/api-pcaps"))
    assert paths.local_node_file(c.apiserver, state) is None
    moved = config_from_dict({"apiserver": {"local_node_file": "/etc/fw/node.json", "pcap_dir": "/p"}})
    assert paths.local_node_file(moved.apiserver, "/x") == Path("/etc/fw/node.json")
    assert paths.server_files(moved.apiserver, "/x") == (Path("/x/server.db"), Path("/p"))
