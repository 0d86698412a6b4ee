"""Delivery policy: what an answer means for a queued report, and how long to wait before a retry.

Pure functions with an injected random source, so the policy is tested without a network.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 3600.0  # a server may ask us to wait, but not for more than an hour


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # remove from the outbox
    RETRY = "retry"  # keep, retry after a backoff (network error, 5xx, 408, a bad 2xx answer)
    THROTTLED = "throttled"  # keep, retry after Retry-After (429/503), and pause every stream
    AUTH = "auth"  # keep, retry slowly, and say so in health (401/403)
    DEAD = "dead"  # move to the dead-letter table with the reason (other 4xx)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After: delta seconds or an HTTP date -> seconds to wait (0..1 h); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(MAX_RETRY_AFTER, seconds))


def classify(status: int, retry_after: float | None) -> Outcome:
    """An HTTP status -> what to do with the report that got it."""
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, f"{status}")
    if status in (429, 503):
        return Outcome(Verdict.THROTTLED, f"{status} {'rate limited' if status == 429 else 'unavailable'}",
                       retry_after)
    if status in (401, 403):
        return Outcome(Verdict.AUTH, f"{status} {'unauthorized' if status == 401 else 'forbidden'}")
    if status == 408 or status >= 500 or status < 200:
        return Outcome(Verdict.RETRY, f"server answered {status}", retry_after)
    if 300 <= status < 400:
        return Outcome(Verdict.RETRY, f"unexpected redirect {status} (check reporter.url)")
    return Outcome(Verdict.DEAD, f"server refused the report with {status}")


def backoff(attempts: int, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempts` (1-based): initial * 2^(n-1), capped, "equal jitter".

    Half the delay is fixed and half random, so agents that lost the server together do not come
    back in lockstep, and no retry is ever sooner than half the nominal delay.
    """
    nominal = min(maximum, initial * (2.0 ** min(max(attempts - 1, 0), 30)))
    return nominal / 2 + rand() * nominal / 2


class Throttle:
    """The node-wide pause after 429/503 (Retry-After) or 401/403, shared by every caller."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until = 0.0

    def pause(self, seconds: float) -> None:
        self.until = max(self.until, self.clock() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.until - self.clock())
