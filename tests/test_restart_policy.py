"""Restart policy as pure logic with an injected clock."""

from __future__ import annotations

from floodwatch.runtime.supervisor.restart import RestartPolicy
from floodwatch.settings.core import SupervisorSettings


def test_backoff_grows_and_is_capped() -> None:
    p = RestartPolicy(SupervisorSettings(backoff_initial=0.1, backoff_factor=2, backoff_max=0.5,
                                         flap_max_restarts=100))
    delays = []
    for t in range(6):
        p.started(float(t))
        delays.append(p.exited(float(t) + 0.01).delay)
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_backoff_resets_after_a_stable_run() -> None:
    p = RestartPolicy(SupervisorSettings(backoff_initial=0.1, stable_after=60, flap_max_restarts=100))
    for t in range(3):
        p.started(t)
        p.exited(t + 0.5)
    p.started(10)
    assert p.exited(10 + 61).delay == 0.1


def test_flapping_guard_trips_within_the_window_only() -> None:
    p = RestartPolicy(SupervisorSettings(flap_max_restarts=3, flap_window=10, backoff_initial=0.1))
    assert all(p.exited(t).restart for t in (0, 1, 2))
    give_up = p.exited(3)
    assert not give_up.restart and "3 restarts within 10 s" in give_up.reason
    q = RestartPolicy(SupervisorSettings(flap_max_restarts=3, flap_window=10))
    assert all(q.exited(t).restart for t in (0, 11, 22, 33, 44))  # spread out: never trips
