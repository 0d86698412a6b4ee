"""The actor base: lifecycle, timers, event bus, bulk channels, heartbeats to the supervisor.

`Actor` runs a zmq.Poller loop in one thread; `AsyncActor` runs the same lifecycle on asyncio (for
aiohttp-based actors). Both: SIGTERM/SIGINT -> on_stop -> exit 0; an unhandled error -> traceback in
the log and exit 1, and the supervisor restarts the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import zmq
import zmq.asyncio
from loguru import logger

from floodwatch import bus, messages
from floodwatch.config import Config, load_config
from floodwatch.errors import ConfigError, FloodwatchError, MessageDecodeError, PeersAbsent
from floodwatch.logs import RateLimited, setup_logging
from floodwatch.messages import ActorHeartbeat, ActorHello, ActorHelloAck, ActorReady, Message

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


def die_with_supervisor() -> None:
    """When supervised, get SIGTERM if the supervisor dies (no orphan actors), and check it is alive."""
    sup = os.environ.get("FLOODWATCH_SUPERVISOR_PID", "")
    if not sup.isdigit():
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(sup):
        raise SystemExit(f"supervisor {sup} is gone")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Pusher:
    """The sending end of a bulk channel; counts what it sent and what the HWM made it drop."""

    def __init__(self, sock: zmq.Socket, counters: dict[str, Any], name: str) -> None:
        self.sock = sock
        self._counters = counters
        self._sent = f"{name}_sent"
        self._dropped = f"{name}_dropped"
        counters.setdefault(self._sent, 0)
        counters.setdefault(self._dropped, 0)

    def send(self, msg: Message, block: bool = False, timeout: float | None = None) -> bool:
        """Send one message. Non-blocking by default: False (and counted) when the peer is full.

        With block=True it waits (up to `timeout` seconds, forever when None): file sources use it so
        that nothing is lost and results do not depend on speed.
        """
        data = messages.encode(msg)
        try:
            if block:
                if timeout is not None and not self.sock.poll(int(timeout * 1000), zmq.POLLOUT):
                    self._counters[self._dropped] += 1
                    return False
                self.sock.send(data)
            else:
                self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self._counters[self._dropped] += 1
            self._counters["dropped"] += 1
            return False
        self._counters[self._sent] += 1
        self._counters["out"] += 1
        return True


class _Core:
    """What both actor kinds share: config, counters, decoding, heartbeats, stop flag."""

    name: ClassVar[str] = ""
    subscribes: ClassVar[tuple[type[Message], ...]] = ()

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings: Any = config.section(self.name) if self.name in type(config).__dataclass_fields__ else None
        self.endpoints = bus.endpoints(config.bus, config.agent)
        self.log = logger.bind(actor=self.name)
        self.counters: dict[str, Any] = {"in": 0, "out": 0, "dropped": 0, "bad_messages": 0, "errors": 0}
        self.health = "ok"
        self.stopping = False
        self.started_at = time.time()
        self._bad_log = RateLimited(10.0)

    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def decode_or_count(self, parts: list[bytes]) -> Message | None:
        """Frames -> a message, or None after counting and (rate-limited) logging a bad one."""
        try:
            return messages.decode_frames(parts)
        except MessageDecodeError as e:
            self.counters["bad_messages"] += 1
            ok, suppressed = self._bad_log.allow("decode")
            if ok:
                more = f" ({suppressed} more suppressed)" if suppressed else ""
                self.log.warning("dropped a bad bus message: {}{}", e, more)
            return None

    def heartbeat(self) -> ActorHeartbeat:
        return ActorHeartbeat(
            actor=self.name,
            pid=os.getpid(),
            ts=time.time(),
            counters=dict(self.counters),
            cpu_seconds=cpu_seconds(),
            rss_bytes=rss_bytes(),
            health=self.health,
        )

    def _topics(self) -> list[str]:
        return [cls.TOPIC for cls in self.subscribes]

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

    def _probe_topic(self) -> str:
        return f"actor.probe.{self.name}.{os.getpid()}"


class Actor(_Core):
    """A synchronous actor. Override on_start / on_message / on_stop; use every(), pull(), push()."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self._readers: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self._timers: list[tuple[float, int, float | Callable[[], float], Callable[[], None]]] = []
        self._timer_seq = 0
        self._sockets: list[zmq.Socket] = []
        self.control: zmq.Socket | None = None
        self.pub_sock: zmq.Socket | None = None
        self._wake_fd = -1

    # -- hooks -------------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Bind/connect bulk sockets, set timers."""

    def on_message(self, msg: Message) -> None:
        """One decoded event from the bus (of a subscribed type)."""

    def on_stop(self) -> None:
        """Flush and release; called once on SIGTERM or request_stop()."""

    # -- tools for subclasses --------------------------------------------------------------------
    def publish(self, msg: Message) -> None:
        assert self.pub_sock is not None
        self.pub_sock.send_multipart(messages.frames(msg))
        self.counters["out"] += 1

    def every(self, seconds: float | Callable[[], float], fn: Callable[[], None], first: float | None = None) -> None:
        """Call fn every `seconds` (first after `first` seconds, default one period). `seconds` may be a
        function, asked after each call for the delay from then to the next call (a timer that slows down
        while there is nothing to do, or one that keeps to a phase)."""
        period = seconds() if callable(seconds) else seconds
        due = time.monotonic() + (period if first is None else first)
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, seconds, fn))

    def due_now(self, fn: Callable[[], None]) -> None:
        """Make the periodic timer of fn due at once (it then goes on at its period from now)."""
        now = time.monotonic()
        self._timers = [(min(due, now) if f == fn else due, seq, every, f) for due, seq, every, f in self._timers]
        heapq.heapify(self._timers)

    def add_reader(self, sock: zmq.Socket, handler: Callable[[zmq.Socket], None]) -> None:
        self._readers[sock] = handler
        self.poller.register(sock, zmq.POLLIN)
        self._sockets.append(sock)

    def pull(self, endpoint: str, handler: Callable[[Message], None], hwm: int, batch: int = 64) -> zmq.Socket:
        """Bind a PULL socket; each valid message goes to handler (up to `batch` per poll)."""
        sock = bus.pull(self.ctx, endpoint, hwm)

        def read(s: zmq.Socket) -> None:
            for _ in range(batch):
                try:
                    data = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return
                self.counters["in"] += 1
                msg = self.decode_or_count([data])
                if msg is not None:
                    handler(msg)

        self.add_reader(sock, read)
        return sock

    def push(self, endpoint: str, hwm: int, name: str = "push") -> Pusher:
        sock = bus.push(self.ctx, endpoint, hwm)
        self._sockets.append(sock)
        return Pusher(sock, self.counters, name)

    def poll_once(self, timeout_ms: float) -> None:
        """One turn of the loop: wait up to timeout_ms for sockets, handle them, run due timers.

        Actors with a hot loop of their own (capture) call poll_once(0) between batches.
        """
        # rounded up: a timer due in 0.4 ms must not turn into poll(0) and a busy loop until it is due
        for sock, _ in self.poller.poll(math.ceil(timeout_ms)):
            if sock == self._wake_fd:
                self._drain_wakeup()
            else:
                self._readers[sock](sock)
        self._run_timers()

    def next_timeout_ms(self) -> float:
        """Sleep until the next timer (a signal wakes the poll at once, so no need to wake early)."""
        if not self._timers:
            return 1000.0
        return max(0.0, min(1000.0, (self._timers[0][0] - time.monotonic()) * 1000))

    def _install_wakeup(self) -> None:
        """Signals write a byte to a socketpair the poller watches: SIGTERM ends a long poll at once."""
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._wake_fd = self._wake_r.fileno()
        self.poller.register(self._wake_fd, zmq.POLLIN)

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass

    def run_loop(self) -> None:
        """The main loop; override only for a hot loop (and call poll_once often)."""
        while not self.stopping:
            self.poll_once(self.next_timeout_ms())

    # -- internals -------------------------------------------------------------------------------
    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now and not self.stopping:
            due, seq, every, fn = heapq.heappop(self._timers)
            fn()
            if callable(every):
                nxt = time.monotonic() + every()
            else:
                nxt = due + every
                if nxt <= now:  # we fell behind: skip missed ticks rather than bursting
                    nxt = now + every
            heapq.heappush(self._timers, (nxt, seq, every, fn))

    def _read_events(self, sock: zmq.Socket) -> None:
        for _ in range(256):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch(parts)

    def _dispatch(self, parts: list[bytes]) -> None:
        msg = self._accept(parts)
        if msg is not None:
            self.on_message(msg)

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
            while sub.poll(20, zmq.POLLIN):
                parts = sub.recv_multipart()
                if parts[0] == topic:
                    return early
                early.append(parts)
        raise PeersAbsent(f"the event bus at {self.endpoints.events_in} does not carry our messages")

    def _read_control(self, sock: zmq.Socket) -> None:
        for _ in range(16):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.decode_or_count(parts[-1:])  # the supervisor sends nothing we act on after hello

    def _send_control(self, msg: Message) -> None:
        assert self.control is not None
        try:
            self.control.send(messages.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["dropped"] += 1

    def _handshake(self) -> None:
        self.control = bus.dealer(self.ctx, self.endpoints.control, self.name)
        self._sockets.append(self.control)
        self._send_control(ActorHello(actor=self.name, pid=os.getpid()))
        timeout = self.config.supervisor.hello_timeout
        if not self.control.poll(int(timeout * 1000), zmq.POLLIN):
            raise PeersAbsent(
                f"no supervisor answered at {self.endpoints.control} within {timeout:g} s: "
                "start `floodwatch run` first (or a test harness)"
            )
        msg = self.decode_or_count(self.control.recv_multipart()[-1:])
        if not isinstance(msg, ActorHelloAck) or not msg.ok:
            reason = getattr(msg, "reason", "bad answer")
            raise PeersAbsent(f"the supervisor at {self.endpoints.control} refused {self.name}: {reason}")
        self.add_reader(self.control, self._read_control)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._install_wakeup()
        die_with_supervisor()
        try:
            self._handshake()
            hwm = self.config.bus.hwm_events
            self.pub_sock = bus.pub(self.ctx, self.endpoints, hwm)
            self._sockets.append(self.pub_sock)
            sub = bus.sub(self.ctx, self.endpoints, [*self._topics(), self._probe_topic()], hwm)
            self._sockets.append(sub)
            early = self._await_bus(sub)
            self.on_start()
            self.add_reader(sub, self._read_events)
            for parts in early:
                self._dispatch(parts)
            self._send_control(ActorReady(actor=self.name, pid=os.getpid()))
            self.every(on_phase(self.config.supervisor.heartbeat_interval), self._beat, first=0.0)
            self.log.info("started (pid {})", os.getpid())
            self.run_loop()
            self.on_stop()
            self._send_control(self.heartbeat())
            self.log.info("stopped")
            return 0
        finally:
            for s in self._sockets:
                s.close(0)
            self.ctx.term()

    def _beat(self) -> None:
        self._send_control(self.heartbeat())


class AsyncActor(_Core):
    """An asyncio actor: the same lifecycle, hooks are coroutines; use self.create_task for workers."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.actx = zmq.asyncio.Context()
        self.control: zmq.asyncio.Socket | None = None
        self.pub_sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop_event: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._sockets: list[zmq.asyncio.Socket] = []

    async def on_start(self) -> None:
        """Start servers, clients and workers."""

    async def on_message(self, msg: Message) -> None:
        """One decoded event from the bus (of a subscribed type)."""

    async def on_stop(self) -> None:
        """Flush and release."""

    async def publish(self, msg: Message) -> None:
        assert self.pub_sock is not None
        await self.pub_sock.send_multipart(messages.frames(msg))
        self.counters["out"] += 1

    def create_task(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        """A background task: if it dies with an error, the actor stops and exits non-zero."""
        task = asyncio.ensure_future(coro)
        task.set_name(name or repr(coro))
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def every(self, seconds: float | Callable[[], float], fn: Callable[[], Awaitable[None]],
              first: float | None = None) -> None:
        """Call fn every `seconds` (a number, or a function giving the delay to the next call)."""
        def delay() -> float:
            return seconds() if callable(seconds) else seconds

        async def loop() -> None:
            await asyncio.sleep(delay() if first is None else first)
            while not self.stopping:
                await fn()
                await asyncio.sleep(delay())

        self.create_task(loop(), name=f"every-{getattr(fn, '__name__', 'timer')}")

    def request_stop(self, *_: Any) -> None:
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failure = exc
            self.request_stop()

    async def _send_control(self, msg: Message) -> None:
        assert self.control is not None
        try:
            await self.control.send(messages.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["dropped"] += 1

    async def _handshake(self) -> None:
        self.control = self.actx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.IDENTITY, self.name.encode())
        self.control.connect(self.endpoints.control)
        self._sockets.append(self.control)
        await self._send_control(ActorHello(actor=self.name, pid=os.getpid()))
        timeout = self.config.supervisor.hello_timeout
        if not await self.control.poll(int(timeout * 1000), zmq.POLLIN):  # type: ignore[call-arg]
            raise PeersAbsent(
                f"no supervisor answered at {self.endpoints.control} within {timeout:g} s: "
                "start `floodwatch run` first (or a test harness)"
            )
        msg = self.decode_or_count((await self.control.recv_multipart())[-1:])
        if not isinstance(msg, ActorHelloAck) or not msg.ok:
            raise PeersAbsent(f"the supervisor at {self.endpoints.control} refused {self.name}")

    async def _events(self, sock: zmq.asyncio.Socket) -> None:
        while not self.stopping:
            await self._dispatch(await sock.recv_multipart())

    async def _dispatch(self, parts: list[bytes]) -> None:
        msg = self._accept(parts)
        if msg is not None:
            await self.on_message(msg)

    async def _await_bus(self, sub: zmq.asyncio.Socket) -> list[list[bytes]]:
        """As Actor._await_bus: wait until our own probe comes back through the proxy."""
        assert self.pub_sock is not None
        topic = self._probe_topic().encode()
        early: list[list[bytes]] = []
        deadline = time.monotonic() + self.config.supervisor.hello_timeout
        while time.monotonic() < deadline:
            await self.pub_sock.send_multipart([topic, b""])
            while await sub.poll(20, zmq.POLLIN):  # type: ignore[call-arg]
                parts = await sub.recv_multipart()
                if parts[0] == topic:
                    return early
                early.append(parts)
        raise PeersAbsent(f"the event bus at {self.endpoints.events_in} does not carry our messages")

    async def _drain_control(self) -> None:
        assert self.control is not None
        while not self.stopping:
            parts = await self.control.recv_multipart()
            self.decode_or_count(parts[-1:])

    async def _beat(self) -> None:
        await self._send_control(self.heartbeat())

    async def run_async(self) -> int:
        self._stop_event = asyncio.Event()
        self._failure = None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        die_with_supervisor()
        try:
            await self._handshake()
            self.pub_sock = self.actx.socket(zmq.PUB)
            self.pub_sock.setsockopt(zmq.LINGER, 0)
            self.pub_sock.setsockopt(zmq.SNDHWM, self.config.bus.hwm_events)
            self.pub_sock.connect(self.endpoints.events_in)
            self._sockets.append(self.pub_sock)
            sub = self.actx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, self.config.bus.hwm_events)
            sub.setsockopt(zmq.MAXMSGSIZE, messages.MAX_MESSAGE_BYTES)
            for topic in [*self._topics(), self._probe_topic()]:
                sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
            sub.connect(self.endpoints.events_out)
            self._sockets.append(sub)
            early = await self._await_bus(sub)
            self.create_task(self._drain_control(), name="control")
            await self.on_start()
            for parts in early:
                await self._dispatch(parts)
            self.create_task(self._events(sub), name="events")
            await self._send_control(ActorReady(actor=self.name, pid=os.getpid()))
            self.every(on_phase(self.config.supervisor.heartbeat_interval), self._beat, first=0.0)
            self.log.info("started (pid {})", os.getpid())
            await self._stop_event.wait()
            await self.on_stop()
            await self._beat()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._failure is not None:
                raise self._failure
            self.log.info("stopped")
            return 0
        finally:
            for s in self._sockets:
                s.close(0)
            self.actx.term()

    def run(self) -> int:
        return asyncio.run(self.run_async())


def actor_arg_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m actors.{name}", description=f"floodwatch {name} actor")
    p.add_argument("--config", required=True, help="TOML config file")
    return p


def run_actor(cls: type[Actor] | type[AsyncActor], argv: list[str] | None = None) -> int:
    """Entry point of every actor process: parse args, load config, log, run, map errors to exits."""
    args = actor_arg_parser(cls.name).parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"floodwatch {cls.name}: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log, cls.name)
    try:
        return cls(config).run()
    except PeersAbsent as e:
        logger.bind(actor=cls.name).error("{}", e)
        return 2
    except FloodwatchError as e:
        logger.bind(actor=cls.name).opt(exception=e).error("fatal: {}", e)
        return 1
    except Exception as e:  # noqa: BLE001 - let it crash, but say why: the supervisor restarts us
        logger.bind(actor=cls.name).opt(exception=e).error("crashed: {}: {}", type(e).__name__, e)
        return 1
