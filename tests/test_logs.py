"""floodwatch/logs.py: the rate-limited log (once per interval per kind, then how many were held back),
and setting logging up again in a forked actor."""

from __future__ import annotations

import subprocess
from pathlib import Path

from loguru import logger

from floodwatch.logs import RateLimitedLog
from tests.helpers import PYTHON, REPO


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_each_kind_once_per_interval_then_the_count_of_the_suppressed() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    try:
        clock = Clock()
        log = RateLimitedLog(logger, 10.0, clock)
        assert log.warning("bad", "bad batch dropped: {}", "short")
        assert not log.warning("bad", "bad batch dropped: {}", "again")
        assert not log.warning("bad", "bad batch dropped: {}", "and again")
        assert log.error("disk", "cannot write {}", "/x")  # another kind is not held back
        clock.t += 9.9
        assert not log.warning("bad", "bad batch dropped: {}", "still")
        clock.t += 0.1
        assert log.warning("bad", "bad batch dropped: {}", "later")
        clock.t += 10
        assert log.say("INFO", "bad", "bad batch dropped: {}", "quiet")
    finally:
        logger.remove(sink)
    assert lines == ["WARNING bad batch dropped: short", "ERROR cannot write /x",
                     "WARNING bad batch dropped: later (3 more suppressed)", "INFO bad batch dropped: quiet"]


def _log_twice(settings: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = f"""
from loguru import logger
from floodwatch.logs import setup_logging
from floodwatch.settings.core import LogSettings
settings = {settings}
setup_logging(settings, "supervisor")
logger.info("one")
setup_logging(settings, "capture")   # as an actor forked from the supervisor's image does
logger.info("two")
setup_logging(LogSettings(level="WARNING"), "capture")   # other settings: new handlers
logger.info("three")
logger.warning("four")
"""
    return subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)


def test_the_same_settings_again_only_change_the_name(tmp_path: Path) -> None:
    """Set up again with the settings already in force (a forked actor): every line once, with the new
    name; other settings still take effect."""
    lines = _log_twice("LogSettings()", tmp_path).stderr.splitlines()
    assert [(line.split()[3], line.split()[4]) for line in lines] == [
        ("supervisor", "one"), ("capture", "two"), ("capture", "four")]


def test_a_file_sink_is_made_again_and_written_once(tmp_path: Path) -> None:
    log = tmp_path / "fw.log"
    _log_twice(f"LogSettings(file={str(log)!r})", tmp_path)
    lines = log.read_text().splitlines()
    assert [line.rsplit(" - ", 1)[-1] for line in lines] == ["one", "two"]
