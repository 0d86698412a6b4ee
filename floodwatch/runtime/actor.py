"""The synchronous actor face: a zmq.Poller loop in one thread over the shared core.

SIGTERM/SIGINT -> on_stop -> exit 0; an unhandled error -> traceback in the log and exit 1, and the
supervisor restarts the process (floodwatch.runtime.entry.run_actor).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq

from floodwatch import bus, messages
from floodwatch.config import Config
from floodwatch.messages import Message
from floodwatch.runtime.core import ActorCore, S, die_with_supervisor

Period = float | Callable[[], float]
IDLE_POLL_MS = 60_000.0  # the longest sleep of the loop (every actor has its heartbeat timer, 5 s by default)


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


class Actor(ActorCore[S]):
    """A synchronous actor. Override on_start / on_message / on_stop; use every(), pull(), push()."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.poller = zmq.Poller()
        self._readers: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self._fd_readers: dict[int, Callable[[], None]] = {}  # plain sockets (the collector's UDP)
        self._timers: list[tuple[float, int, Period, Callable[[], None]]] = []
        self._timer_seq = 0
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
        self._send_event(msg)

    def every(self, seconds: Period, fn: Callable[[], None], first: float | None = None) -> None:
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
        self._own(sock)

    def add_fd_reader(self, fd: int, handler: Callable[[], None]) -> None:
        """Call handler when a plain file descriptor (not a ZeroMQ socket) is readable."""
        self._fd_readers[fd] = handler
        self.poller.register(fd, zmq.POLLIN)

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
        return Pusher(self._own(bus.push(self.ctx, endpoint, hwm)), self.counters, name)

    def poll_once(self, timeout_ms: float) -> None:
        """One turn of the loop: wait up to timeout_ms for sockets, handle them, run due timers.

        Actors with a hot loop of their own (capture) call poll_once(0) between batches.
        """
        # rounded up: a timer due in 0.4 ms must not turn into poll(0) and a busy loop until it is due
        for sock, _ in self.poller.poll(math.ceil(timeout_ms)):
            if sock == self._wake_fd:
                self._drain_wakeup()
            elif sock in self._fd_readers:
                self._fd_readers[sock]()
            else:
                self._readers[sock](sock)
        self._run_timers()

    def next_timeout_ms(self) -> float:
        """Sleep until the next timer, however far (a signal or a message wakes the poll at once, so no
        need to wake early: an idle actor wakes for its heartbeat, not once a second)."""
        if not self._timers:
            return IDLE_POLL_MS
        return max(0.0, min(IDLE_POLL_MS, (self._timers[0][0] - time.monotonic()) * 1000))

    def run_loop(self) -> None:
        """The main loop; override only for a hot loop (and call poll_once often)."""
        while not self.stopping:
            self.poll_once(self.next_timeout_ms())

    # -- internals -------------------------------------------------------------------------------
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

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._install_wakeup()
        die_with_supervisor()
        try:
            sub, early = self._open_bus()
            self.on_start()
            self._readers[sub] = self._read_events
            self.poller.register(sub, zmq.POLLIN)
            for parts in early:
                self._dispatch(parts)
            self._ready()
            self.every(self._beat_period(), self._beat, first=0.0)
            self.run_loop()
            self.on_stop()
            self._stopped()
            return 0
        finally:
            self._close()
