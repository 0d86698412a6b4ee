"""When to send, and to whom: pure functions of incident states, channel filters and a clock.

- `events_for(before, after)`: what a change of a stored incident means. Open; escalation (the severity
  rose, or a vector not seen before joined); resolve. Every other update says nothing: never one
  message per update.
- `recipients(...)`: the channels a message goes to. Open and escalation: the channels whose filters
  match the incident now. Resolve: the channels that were told about the incident (so a PagerDuty
  trigger always gets its resolve, and nobody gets the end of a story they never heard the start of).
- `plan(...)`: a channel's next step under its rate limit: send the oldest message, fold everything
  pending into one digest (an attack storm), or wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from floodwatch.server.notify.channels import SEVERITY_RANK, Channel

OPEN, ESCALATE, RESOLVE, DIGEST, TEST = "open", "escalate", "resolve", "digest", "test"
WINDOW = 60.0  # the rate limit's window, seconds


@dataclass(frozen=True)
class Event:
    kind: str  # open | escalate | resolve
    reason: str  # for people: "severity high -> critical", "new vector udp_flood/ntp_amplification"


def vector_names(inc: dict[str, Any]) -> list[str]:
    names = []
    for v in inc.get("vectors") or []:
        if isinstance(v, dict):
            name = "/".join(str(v[k]) for k in ("family", "subtype") if v.get(k))
            if name and name not in names:
                names.append(name)
    return names


def events_for(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Event]:
    """The messages a change from `before` (None: the incident is new) to `after` calls for."""
    resolved = after.get("status") == "resolved"
    if before is None:
        opened = [Event(OPEN, "opened")]
        return [*opened, Event(RESOLVE, "resolved")] if resolved else opened
    if before.get("status") == "resolved":
        return []
    if resolved:
        return [Event(RESOLVE, "resolved")]
    reasons = []
    old, new = SEVERITY_RANK.get(before.get("severity", ""), 0), SEVERITY_RANK.get(after.get("severity", ""), 0)
    if new > old:
        reasons.append(f"severity {before.get('severity')} -> {after.get('severity')}")
    seen = set(vector_names(before))
    joined = [v for v in vector_names(after) if v not in seen]
    if joined:
        reasons.append("new vector " + ", ".join(joined))
    return [Event(ESCALATE, "; ".join(reasons))] if reasons else []


def recipients(channels: Iterable[Channel], event: Event, inc: dict[str, Any], told: set[str]) -> list[Channel]:
    """Channels for `event` about `inc`; `told`: names of the channels already told about it."""
    if event.kind == RESOLVE:
        return [c for c in channels if c.name in told]
    return [c for c in channels if c.wants(str(inc.get("node_name") or ""), str(inc.get("node_uuid") or ""),
                                           str(inc.get("attack_family") or ""), str(inc.get("severity") or ""))]


@dataclass(frozen=True)
class Pending:
    id: int
    event: str
    next_at: float  # not before this time (a retry's backoff)


@dataclass(frozen=True)
class Step:
    action: str  # send | digest | wait | idle
    ids: tuple[int, ...] = ()
    until: float = 0.0  # for wait


def plan(pending: Sequence[Pending], sent_at: Sequence[float], rate: int, now: float, can_digest: bool) -> Step:
    """The channel's next step. Messages go out oldest first (an open before its resolve); `sent_at` are
    the channel's deliveries in the last minute. When more messages wait than the minute's budget
    allows, they are folded into one digest (kinds that cannot fold, PagerDuty, wait instead)."""
    if not pending:
        return Step("idle")
    head = pending[0]
    if head.next_at > now:
        return Step("wait", until=head.next_at)
    recent = sorted(t for t in sent_at if t > now - WINDOW)
    budget = rate - len(recent)
    if budget <= 0:
        return Step("wait", until=recent[0] + WINDOW)
    if can_digest and len(pending) > budget and len(pending) > 1:
        return Step("digest", tuple(p.id for p in pending))
    return Step("send", (head.id,))


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Delay after the n-th failed attempt (1, 2, ...): initial, doubled each time, at most maximum."""
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))
