"""One supervised actor, its state, and which actors a config runs."""

from __future__ import annotations

import enum
import subprocess
from dataclasses import dataclass
from typing import Any

from floodwatch.config import Config
from floodwatch.messages import ActorHeartbeat
from floodwatch.runtime.supervisor.restart import RestartPolicy
from floodwatch.runtime.supervisor.zygote import ForkedProcess
from floodwatch.settings.core import ACTOR_ORDER


class ChildState(enum.Enum):
    """Where a child is in its life; `floodwatch status` shows the value."""

    STARTING = "starting"  # spawned, not ready yet (start_timeout)
    RUNNING = "running"  # ready, heartbeating (heartbeat_timeout)
    STOPPING = "stopping"  # SIGTERM sent, SIGKILL at kill_at
    BACKOFF = "backoff"  # exited, restart at restart_at
    FAILED = "failed"  # flapped: not restarted again
    STOPPED = "stopped"  # not started, or stopped on purpose


@dataclass
class Child:
    """One supervised actor and what we know of it."""

    name: str
    module: str
    critical: bool
    policy: RestartPolicy
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None
    state: ChildState = ChildState.STOPPED
    restarts: int = 0
    started: float = 0.0  # monotonic
    started_wall: float = 0.0
    ready: bool = False
    last_beat: float = 0.0  # monotonic
    heartbeat: ActorHeartbeat | None = None
    restart_at: float | None = None
    kill_at: float | None = None
    why_stopping: str = ""
    last_exit: int | None = None
    restart_on_exit: bool = False  # stopped for a config reload: start again at once, no backoff

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def row(self, now: float) -> dict[str, Any]:
        hb = self.heartbeat
        return {
            "name": self.name,
            "pid": self.pid,
            "state": self.state.value,
            "critical": self.critical,
            "restarts": self.restarts,
            "uptime": round(now - self.started, 3) if self.pid else 0.0,
            "last_heartbeat": round(now - self.last_beat, 3) if self.last_beat else None,
            "last_exit": self.last_exit,
            "counters": dict(hb.counters) if hb else {},
            "cpu_seconds": hb.cpu_seconds if hb else 0.0,
            "rss_bytes": hb.rss_bytes if hb else 0,
            "health": hb.health if hb else "",
            "gauges": list(hb.gauges) if hb else [],
        }


def actor_names(config: Config) -> list[str]:
    """Actors to run, in start order: built-in ones that are listed and enabled, then extra modules. No
    metrics actor when the API server's actor serves /metrics (Config.metrics_in_apiserver)."""
    wanted = config.supervisor.actors
    names = [n for n in ACTOR_ORDER if n in wanted and getattr(config.section(n), "enabled", True)]
    if config.metrics_in_apiserver():
        names.remove("metrics")
    return names + [n for n in wanted if n in config.supervisor.modules and n not in names]
