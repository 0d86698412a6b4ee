"""The rate-limited log (floodwatch/logs.py): once per interval per kind, then how many were held back."""

from __future__ import annotations

from loguru import logger

from floodwatch.logs import RateLimitedLog


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
