"""Sections every process reads: [agent], [bus], [supervisor], [log]."""

from __future__ import annotations

from dataclasses import dataclass, field

# Start order: consumers (which bind the bulk channels) before producers. Stop is the reverse.
# The metrics actor starts first, so /metrics shows the others starting.
ACTOR_ORDER = ("metrics", "apiserver", "reporter", "executor", "detector", "recorder", "aggregator", "collector",
               "capture", "weblog")


@dataclass(frozen=True)
class AgentSettings:
    node_name: str = ""  # empty: the host name
    state_dir: str = "/var/lib/floodwatch"  # databases, baselines, pcaps (0700)
    runtime_dir: str = "/run/floodwatch"  # ipc sockets (0700)


@dataclass(frozen=True)
class BusSettings:
    # Empty endpoints mean ipc://<runtime_dir>/<name>.sock; tests use tcp://127.0.0.1:<port>.
    events_in: str = ""  # the proxy's XSUB: publishers connect here
    events_out: str = ""  # the proxy's XPUB: subscribers connect here
    control: str = ""  # the supervisor's ROUTER
    packets: str = ""  # capture -> aggregator (PUSH/PULL)
    frames: str = ""  # capture -> recorder (PUSH/PULL)
    hwm_packets: int = 2000  # messages (batches) queued per peer before a live source drops
    hwm_frames: int = 200
    hwm_events: int = 20000


@dataclass(frozen=True)
class SupervisorSettings:
    actors: list[str] = field(default_factory=lambda: list(ACTOR_ORDER))  # which actors to run
    # Extra actor modules by name, started after the built-in ones (development and tests):
    # {"probe": "tests.dummy_actor"} runs `python -m tests.dummy_actor --config FILE` as actor "probe".
    modules: dict[str, str] = field(default_factory=dict)
    critical: list[str] = field(default_factory=lambda: ["capture", "aggregator", "detector", "reporter"])
    heartbeat_interval: float = 5.0  # seconds between an actor's heartbeats (they carry its counters)
    heartbeat_timeout: float = 15.0  # silence after which an actor is taken as hung
    start_timeout: float = 30.0  # time an actor has to report ready
    hello_timeout: float = 5.0  # time a starting actor waits for the supervisor's answer
    stop_timeout: float = 5.0  # SIGTERM -> SIGKILL grace
    backoff_initial: float = 0.1  # first restart delay
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    stable_after: float = 60.0  # an actor up this long has its backoff reset
    flap_max_restarts: int = 10  # more restarts than this within flap_window: give up on the actor
    flap_window: float = 120.0
    # Fork actors from a zygote that has imported the common modules once (shared pages, fast restarts);
    # false: every actor is a fresh `python -m actors.<name>` process.
    preload: bool = True

    def validate(self) -> None:
        unknown = sorted(set(self.actors) - set(ACTOR_ORDER) - set(self.modules))
        if unknown:
            raise ValueError(f"actors: unknown actor(s) {unknown}; known: {list(ACTOR_ORDER)}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must be larger than heartbeat_interval")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    json: bool = False  # JSON lines (for journald / log shippers) instead of the terminal format
    file: str = ""  # also write to this file (0600)

    def validate(self) -> None:
        if self.level.upper() not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"level: unknown log level {self.level!r}")
