"""Restart policy: exponential backoff that resets after a stable period, and a flapping guard."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from floodwatch.settings.core import SupervisorSettings


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float
    reason: str = ""


class RestartPolicy:
    """Decides, at each exit of one actor, whether and when to start it again. Time is injected."""

    def __init__(self, settings: SupervisorSettings) -> None:
        self.s = settings
        self._delay = settings.backoff_initial
        self._restarts: deque[float] = deque()
        self._started_at: float | None = None

    def started(self, now: float) -> None:
        self._started_at = now

    def exited(self, now: float) -> Decision:
        if self._started_at is not None and now - self._started_at >= self.s.stable_after:
            self._delay = self.s.backoff_initial  # it ran stably: forget earlier trouble
        self._started_at = None
        while self._restarts and now - self._restarts[0] > self.s.flap_window:
            self._restarts.popleft()
        if len(self._restarts) >= self.s.flap_max_restarts:
            return Decision(
                False, 0.0,
                f"{len(self._restarts)} restarts within {self.s.flap_window:g} s (flap_max_restarts)",
            )
        self._restarts.append(now)
        delay = self._delay
        self._delay = min(self.s.backoff_max, self._delay * self.s.backoff_factor)
        return Decision(True, delay)
