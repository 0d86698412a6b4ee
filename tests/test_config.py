"""Config files: typed, validated, and errors that name the file and the key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from floodwatch.config import config_from_dict, load_config
from floodwatch.errors import ConfigError
from floodwatch.runtime.supervisor.child import actor_names
from tests.helpers import PYTHON, REPO


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "f.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["default.toml", "dev.toml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert config.supervisor.heartbeat_timeout > config.supervisor.heartbeat_interval


def test_values_are_typed(tmp_path: Path) -> None:
    c = load_config(_write(tmp_path, "[supervisor]\nheartbeat_interval = 2\nactors = ['capture']\n"))
    assert c.supervisor.heartbeat_interval == 2.0 and isinstance(c.supervisor.heartbeat_interval, float)
    assert c.supervisor.actors == ["capture"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[supervisor]\nheartbeat_intervall = 1\n", "supervisor.heartbeat_intervall: unknown key"),
        ("[supervisr]\n", "unknown section"),
        ("[supervisor]\nheartbeat_interval = 'fast'\n", "supervisor.heartbeat_interval: expected a number"),
        ("[supervisor]\nactors = ['capture', 'nope']\n", "supervisor.actors: unknown actor"),
        ("[supervisor]\nflap_max_restarts = true\n", "supervisor.flap_max_restarts: expected an integer"),
        ("[log]\nlevel = 'LOUD'\n", "log.level: unknown log level"),
        ("[log\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_config_check_command(tmp_path: Path) -> None:
    good = subprocess.run([PYTHON, "-m", "floodwatch.cli", "config", "check", str(REPO / "configs/default.toml")],
                          capture_output=True, text=True, cwd=REPO)
    assert good.returncode == 0 and good.stdout.startswith("ok:")
    bad = _write(tmp_path, "[capture]\nno_such_key = 1\n")
    out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "config", "check", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "capture.no_such_key: unknown key" in out.stderr


@pytest.mark.parametrize(("sections", "own_actor"), [
    ({}, False),  # the default: the API server's actor serves /metrics, no metrics actor
    ({"metrics": {"in_apiserver": False}}, True),
    ({"apiserver": {"enabled": False}}, True),
    ({"supervisor": {"actors": ["metrics", "capture", "aggregator", "detector"]}}, True),
    ({"supervisor": {"modules": {"apiserver": "tests.dummy_actor"}}}, True),  # not the built-in server
])
def test_metrics_are_served_by_the_apiserver_actor_when_it_runs(sections: dict[str, Any], own_actor: bool) -> None:
    cfg = config_from_dict(sections)
    assert cfg.metrics_in_apiserver() is not own_actor
    assert ("metrics" in actor_names(cfg)) is own_actor
    off = config_from_dict({**sections, "metrics": {"enabled": False}})
    assert "metrics" not in actor_names(off) and not off.metrics_in_apiserver()


def test_metrics_in_apiserver_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="in_apiserver"):
        config_from_dict({"metrics": {"in_apiserver": "yes"}})


def test_an_actor_uses_the_config_handed_down_while_the_file_holds_its_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """actor_config: without a Config from the supervisor (a standalone actor) the file is loaded; with
    one, that very object while the file is unchanged, the file again once it changed (or is gone)."""
    from floodwatch.runtime import entry

    monkeypatch.setattr(entry, "_handed_down", None)
    path = _write(tmp_path, "[supervisor]\nheartbeat_timeout = 15.0\n")
    own, inherited = entry.actor_config(str(path))
    assert not inherited and own.supervisor.heartbeat_timeout == 15.0
    entry.hand_down_config(str(path), path.read_text(), own)
    assert entry.actor_config(str(path)) == (own, True) and entry.actor_config(str(path))[0] is own
    (tmp_path / "other").mkdir()
    assert entry.actor_config(str(_write(tmp_path / "other", path.read_text())))[1] is False  # another file
    path.write_text("[supervisor]\nheartbeat_timeout = 14.0\n")
    fresh, inherited = entry.actor_config(str(path))
    assert not inherited and fresh.supervisor.heartbeat_timeout == 14.0
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read config"):
        entry.actor_config(str(path))
