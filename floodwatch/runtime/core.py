"""The actor core that both faces (floodwatch.runtime.actor, floodwatch.runtime.aio) stand on.

One copy of: config and this actor's typed settings, counters and the sources they are read from, the
handshake with the supervisor, the wait for the event bus, control sends, heartbeats and drain events.
Every socket comes from floodwatch.bus; the handshake and the bus wait run before the actor's own loop
(sync or asyncio) starts, on plain blocking sockets.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

import zmq
from loguru import logger

from floodwatch import bus, messages
from floodwatch.config import Config
from floodwatch.errors import BusError, MessageDecodeError, PeersAbsent
from floodwatch.logs import RateLimitedLog
from floodwatch.messages import ActorHeartbeat, ActorHello, ActorHelloAck, ActorReady, Message
from floodwatch.runtime.libc import PR_SET_PDEATHSIG, prctl

S = TypeVar("S")
CounterSource = Callable[[], Mapping[str, Any]]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def on_phase(period: float) -> Callable[[], float]:
    """A period for every() that keeps to multiples of `period` on the system-wide monotonic clock, so
    timers of the same period in different processes fire together (the supervisor reads every actor's
    heartbeat in one wake-up instead of one wake-up each)."""
    def delay() -> float:
        return period - time.monotonic() % period or period

    return delay


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def die_with_supervisor() -> None:
    """When supervised, get SIGTERM if the supervisor dies (no orphan actors), and check it is alive."""
    sup = os.environ.get("FLOODWATCH_SUPERVISOR_PID", "")
    if not sup.isdigit():
        return
    if not prctl(PR_SET_PDEATHSIG, signal.SIGTERM):
        return
    if os.getppid() != int(sup):
        raise SystemExit(f"supervisor {sup} is gone")


class ActorCore(Generic[S]):
    """What both actor faces share. `S` is the type of this actor's config section (`self.settings`)."""

    name: ClassVar[str] = ""
    subscribes: ClassVar[tuple[type[Message], ...]] = ()

    def __init__(self, config: Config) -> None:
        self.config = config
        has_section = self.name in type(config).__dataclass_fields__
        self.settings: S = cast(S, config.section(self.name) if has_section else None)
        self.endpoints = bus.endpoints(config.bus, config.agent)
        self.log = logger.bind(actor=self.name)
        self.counters: dict[str, Any] = {"in": 0, "out": 0, "dropped": 0, "bad_messages": 0, "errors": 0}
        self._counter_sources: list[CounterSource] = []
        self.gauges: set[str] = set()  # counters that are levels, not totals (see declare_gauges)
        self.health = "ok"
        self.stopping = False
        self.started_at = time.time()
        self._bad_log = RateLimitedLog(self.log, 10.0)
        self.ctx = zmq.Context()
        self._sockets: list[zmq.Socket] = []
        self.control: zmq.Socket | None = None
        self.pub_sock: zmq.Socket | None = None
        self._drained_sent: Message | None = None

    # -- counters: one bridge from the logic to the heartbeat --------------------------------------
    def count_from(self, source: CounterSource, gauges: Iterable[str] = ()) -> None:
        """Counters kept elsewhere (the logic's own dict, a queue's length, a server's snapshot): `source`
        is read at every heartbeat (and for the last one, after on_stop) and merged into self.counters.
        It must stay cheap; an actor that releases what a source reads calls freeze_counters() first.
        `gauges` names those of its values that are levels (see declare_gauges)."""
        self._counter_sources.append(source)
        self.declare_gauges(*gauges)

    def declare_gauges(self, *names: str) -> None:
        """Name the counters that are levels (a queue's length, a rate, a size): they go up and down.
        Every other number is a total that only grows while the actor lives. Heartbeats carry the
        list, so `/metrics` types each one (counter or gauge) without knowing the actor."""
        self.gauges.update(names)

    def read_counters(self) -> dict[str, Any]:
        for source in self._counter_sources:
            self.counters.update(source())
        return dict(self.counters)

    def freeze_counters(self) -> None:
        """Read the sources one last time and stop asking them: for on_stop, before closing what they
        read (a ring, a database), so that the last heartbeat carries the final values."""
        self.read_counters()
        self._counter_sources = []

    def heartbeat(self) -> ActorHeartbeat:
        return ActorHeartbeat(actor=self.name, pid=os.getpid(), ts=time.time(), counters=self.read_counters(),
                              cpu_seconds=cpu_seconds(), rss_bytes=rss_bytes(), health=self.health,
                              gauges=sorted(self.gauges))

    # -- drain events ------------------------------------------------------------------------------
    def drained(self) -> Message | None:
        """Override in actors that hold work (captures to dissect, reports to deliver): a typed event
        saying that nothing is pending, or None while something is. Asked at each heartbeat; published
        when it differs from the last one published."""
        return None

    def _announce_drained(self) -> None:
        event = self.drained()
        if event is not None and event != self._drained_sent:
            self._drained_sent = event
            self._send_event(event)

    # -- messages ----------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def decode_or_count(self, parts: list[bytes]) -> Message | None:
        """Frames -> a message, or None after counting and (rate-limited) logging a bad one."""
        try:
            return messages.decode_frames(parts)
        except MessageDecodeError as e:
            self.counters["bad_messages"] += 1
            self._bad_log.warning("decode", "dropped a bad bus message: {}", e)
            return None

    def _accept(self, parts: list[bytes]) -> Message | None:
        """An event off the bus, decoded, if it is one this actor handles (else counted and dropped)."""
        if parts[0].startswith(b"actor.probe."):
            return None
        self.counters["in"] += 1
        msg = self.decode_or_count(parts)
        if msg is None:
            return None
        if not isinstance(msg, self.subscribes):
            self.counters["bad_messages"] += 1
            return None
        return msg

    def _send_event(self, msg: Message) -> None:
        """Events never block: PUB drops at its high-water mark."""
        assert self.pub_sock is not None
        self.pub_sock.send_multipart(messages.frames(msg))
        self.counters["out"] += 1

    # -- the supervisor and the bus ----------------------------------------------------------------
    def _own(self, sock: zmq.Socket) -> zmq.Socket:
        self._sockets.append(sock)
        return sock

    def _send_control(self, msg: Message) -> None:
        assert self.control is not None
        try:
            self.control.send(messages.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["dropped"] += 1
        except zmq.ZMQError as e:
            raise BusError(f"control socket {self.endpoints.control}: {e}") from e

    def _read_control(self) -> None:
        """The supervisor sends nothing we act on after the hello: read (and count junk) at each beat."""
        assert self.control is not None
        for _ in range(16):
            try:
                parts = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.decode_or_count(parts[-1:])

    def _handshake(self) -> None:
        self.control = self._own(bus.dealer(self.ctx, self.endpoints.control, self.name))
        self._send_control(ActorHello(actor=self.name, pid=os.getpid()))
        timeout = self.config.supervisor.hello_timeout
        try:
            answered = self.control.poll(int(timeout * 1000), zmq.POLLIN)
            parts = self.control.recv_multipart() if answered else []
        except zmq.ZMQError as e:
            raise BusError(f"control socket {self.endpoints.control}: {e}") from e
        if not answered:
            raise PeersAbsent(
                f"no supervisor answered at {self.endpoints.control} within {timeout:g} s: "
                "start `floodwatch run` first (or a test harness)"
            )
        msg = self.decode_or_count(parts[-1:])
        if not isinstance(msg, ActorHelloAck) or not msg.ok:
            reason = msg.reason if isinstance(msg, ActorHelloAck) else "bad answer"
            raise PeersAbsent(f"the supervisor at {self.endpoints.control} refused {self.name}: {reason}")

    def _topics(self) -> list[str]:
        return [cls.TOPIC for cls in self.subscribes]

    def _probe_topic(self) -> str:
        return f"actor.probe.{self.name}.{os.getpid()}"

    def _open_bus(self) -> tuple[zmq.Socket, list[list[bytes]]]:
        """Hello to the supervisor, then our PUB and SUB on the event bus, working: (SUB, early events)."""
        self._handshake()
        hwm = self.config.bus.hwm_events
        self.pub_sock = self._own(bus.pub(self.ctx, self.endpoints, hwm))
        sub = self._own(bus.sub(self.ctx, self.endpoints, [*self._topics(), self._probe_topic()], hwm))
        return sub, self._await_bus(sub)

    def _await_bus(self, sub: zmq.Socket) -> list[list[bytes]]:
        """Publish probes to ourselves until one comes back through the proxy: from then on our PUB
        and SUB are both connected, so nothing we publish or are sent after `ready` is lost.
        Events that arrive meanwhile are kept and handled after on_start."""
        assert self.pub_sock is not None
        topic = self._probe_topic().encode()
        early: list[list[bytes]] = []
        deadline = time.monotonic() + self.config.supervisor.hello_timeout
        while time.monotonic() < deadline:
            self.pub_sock.send_multipart([topic, b""])
            while sub.poll(bus.PROBE_EVERY_MS, zmq.POLLIN):  # a late copy of a probe: dropped by _accept
                parts = sub.recv_multipart()
                if parts[0] == topic:
                    return early
                early.append(parts)
        raise PeersAbsent(f"the event bus at {self.endpoints.events_in} does not carry our messages")

    def _ready(self) -> None:
        self._send_control(ActorReady(actor=self.name, pid=os.getpid()))
        self.log.info("started (pid {})", os.getpid())

    def _beat(self) -> None:
        self._read_control()
        self._send_control(self.heartbeat())
        self._announce_drained()

    def _beat_period(self) -> Callable[[], float]:
        return on_phase(self.config.supervisor.heartbeat_interval)

    def _stopped(self, failure: BaseException | None = None) -> None:
        """After on_stop: the last heartbeat (final counters), then the failure that stopped us, if any."""
        self._send_control(self.heartbeat())
        if failure is not None:
            raise failure
        self.log.info("stopped")

    def _close(self) -> None:
        for s in self._sockets:
            s.close(0)
        self.ctx.term()
