"""[[hostgroup]]: a prefix with its own victim thresholds, from the config file to the detector's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from floodwatch.config import load_config
from floodwatch.detect.evaluate import Detector
from floodwatch.errors import ConfigError
from floodwatch.messages import IncidentEvent, IncidentOpened
from tests.detect.detect_factory import window

T0 = 1_700_000_000.0
CONFIG = """
[detector]
pps_threshold = 1000000
bps_threshold = 1000000000000
victim_pps_threshold = 50000
dynamic = false

[[hostgroup]]
name = "mail"
prefixes = ["198.18.1.0/24"]
pps_threshold = 2000

[[hostgroup]]
name = "game"
prefixes = ["198.18.2.0/24", "2001:db8:2::/48"]
pps_threshold = 200000
"""


def opened_for(path: Path, victim: str, pps: float) -> list[IncidentEvent]:
    cfg = load_config(path)
    d = Detector(cfg.detector, groups=cfg.hostgroup)
    events: list[IncidentEvent] = []
    for i in range(20):
        events += d.step(window(T0 + i * 0.1, pps=pps, victim=victim, proto="udp", sport=123))
    return [e for e in events if isinstance(e, IncidentOpened)]


def test_each_group_applies_its_own_victim_threshold(tmp_path: Path) -> None:
    path = tmp_path / "fw.toml"
    path.write_text(CONFIG)
    # 20 kpps: far over the mail group's 2 kpps, under the game group's 200 kpps and the default 50 kpps
    assert opened_for(path, "198.18.1.7", 20_000)
    assert not opened_for(path, "198.18.2.7", 20_000)
    assert not opened_for(path, "198.18.3.7", 20_000)
    # 120 kpps: over the default for an address in no group, still under the game group's threshold
    assert opened_for(path, "198.18.3.7", 120_000)
    assert not opened_for(path, "198.18.2.7", 120_000)


def test_bad_hostgroup_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "fw.toml"
    path.write_text('[[hostgroup]]\nname = "x"\nprefixes = ["198.18.1.0/33"]\n')
    with pytest.raises(ConfigError, match=r"hostgroup\[0\]\.prefixes"):
        load_config(path)
    path.write_text('hostgroup = "x"\n')
    with pytest.raises(ConfigError, match="array of tables"):
        load_config(path)
