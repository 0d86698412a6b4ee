"""Logging set up once per process with loguru: readable on a terminal, JSON lines when configured."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from floodwatch.settings.core import LogSettings

_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[actor]}</cyan> {message}"
)


_set_up: tuple[LogSettings, object] | None = None  # the settings and stderr the handlers were made for


def setup_logging(settings: LogSettings, actor: str) -> None:
    """Log as `actor` with `settings`. A process whose handlers were made for the same settings and the
    same stderr (an actor forked from the supervisor's image, which set them up) only changes the name:
    making the handlers again (loguru compiles the format) wrote, so copied, about 0.6 MB of the shared
    image in each actor. With a file sink the handlers are always made again (each process its own)."""
    global _set_up
    if _set_up == (settings, sys.stderr) and not settings.file:
        logger.configure(extra={"actor": actor})
        return
    _set_up = (settings, sys.stderr)
    logger.remove()
    logger.configure(extra={"actor": actor})
    level = settings.level.upper()
    if settings.json:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=_FORMAT, backtrace=False, diagnose=False)
    if settings.file:
        fd = os.open(settings.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        logger.add(settings.file, level=level, serialize=settings.json, backtrace=False, diagnose=False)


class RateLimited:
    """Log at most once per `interval` seconds per key, saying how many were suppressed."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float | None = None) -> tuple[bool, int]:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if len(self._last) > 1000:  # keys come from code, but stay bounded regardless
            self._last.clear()
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


class RateLimitedLog:
    """A log that says each kind of message at most once per `interval` seconds; the next one it says
    ends with how many it held back: "... (N more suppressed)". For anything traffic or a peer can repeat."""

    def __init__(self, log: Any, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self._rate = RateLimited(interval)

    def say(self, level: str, key: str, fmt: str, *args: Any) -> bool:
        """Log `fmt.format(*args)` at `level` unless `key` was logged within the interval; True if logged."""
        ok, suppressed = self._rate.allow(key, self.clock())
        if ok:
            self.log.log(level, fmt + (f" ({suppressed} more suppressed)" if suppressed else ""), *args)
        return ok

    def warning(self, key: str, fmt: str, *args: Any) -> bool:
        return self.say("WARNING", key, fmt, *args)

    def error(self, key: str, fmt: str, *args: Any) -> bool:
        return self.say("ERROR", key, fmt, *args)
