"""The supervisor: starts the actors, watches them, restarts them, speaks to systemd.

It owns the event proxy (XSUB/XPUB) and the control ROUTER. Signals only set flags; the loop acts on
them and sleeps to its nearest deadline. Restarts follow RestartPolicy; a critical actor that flaps
makes the supervisor exit non-zero so that systemd restarts the whole service. An embedding program
(`floodwatch analyze`) uses it as a context manager and runs it with run_until().
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
from loguru import logger

from floodwatch import bus, messages
from floodwatch.config import Config, config_from_text, load_config
from floodwatch.errors import ConfigError
from floodwatch.messages import (
    ActorHeartbeat,
    ActorHello,
    ActorHelloAck,
    ActorReady,
    StatusReply,
    StatusRequest,
)
from floodwatch.runtime.libc import page_out_files
from floodwatch.runtime.supervisor.child import Child, ChildState, actor_names
from floodwatch.runtime.supervisor.proxy import EventProxy
from floodwatch.runtime.supervisor.restart import RestartPolicy
from floodwatch.runtime.supervisor.sdnotify import Notifier
from floodwatch.runtime.supervisor.zygote import ForkServer, become_subreaper, reap_orphans

log = logger.bind(actor="supervisor")
TICK = 5.0  # longest sleep of the loop: deadlines wake it, signals (SIGCHLD, SIGTERM, SIGHUP) at once


class Outcome(enum.Enum):
    """How run_until() ended."""

    DONE = "done"  # the caller's condition held
    FAILED = "failed"  # a critical actor failed for good (see failed())
    TIMED_OUT = "timed out"


class Supervisor:
    def __init__(self, config_path: str, config: Config, env: dict[str, str] | None = None,
                 page_out: bool = True) -> None:
        """`page_out`: once every actor runs, drop the library pages only this process touched (a
        long-running agent; `floodwatch analyze`, over in seconds, keeps them)."""
        self.config_path = config_path
        self.config = config
        self.page_out = page_out
        self.notifier = Notifier(env)
        self.ctx = zmq.Context()
        self.endpoints = bus.endpoints(config.bus, config.agent)
        self.children: dict[str, Child] = {}
        self.flags: set[str] = set()
        self.exit_code = 0
        self.announced_ready = False
        self.next_watchdog = 0.0
        self.started_wall = time.time()
        self.reloads = 0
        self.router: zmq.Socket | None = None
        self.proxy: EventProxy | None = None
        self.pending: list[str] = []
        self.poller = zmq.Poller()
        self.forks: ForkServer | None = None  # the zygote while actors start (None: plain processes)
        self.wake_r: socket.socket | None = None
        self.bad_control = 0  # control messages that were not valid messages (status: bad_control_messages)

    # -- set-up ------------------------------------------------------------------------------------
    def _module(self, name: str) -> str:
        return self.config.supervisor.modules.get(name, f"actors.{name}")

    def _child(self, name: str) -> Child:
        return Child(name, self._module(name), name in self.config.supervisor.critical,
                     RestartPolicy(self.config.supervisor))

    def __enter__(self) -> Supervisor:
        """Bind the event proxy and the control socket (BusError if taken); the actors start later."""
        for d in (self.config.agent.runtime_dir, self.config.agent.state_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        if self.config.supervisor.preload and become_subreaper():
            self._hand_down_config()
            self.forks = ForkServer(tuple(self._module(name) for name in actor_names(self.config)))
        try:
            self.proxy = EventProxy(self.ctx, self.endpoints, self.config.bus.hwm_events)
            self.proxy.start()
            self.router = bus.router(self.ctx, self.endpoints.control)
        except BaseException:
            self.shutdown()
            raise
        self.poller.register(self.router, zmq.POLLIN)
        return self

    def _hand_down_config(self) -> None:
        """Before the zygote is forked: our Config for the actors it forks, if the file still holds it
        (the caller may have loaded it a while ago, or built it some other way)."""
        from floodwatch.runtime.entry import hand_down_config  # preloaded for the actors anyway

        try:
            text = Path(self.config_path).read_text(encoding="utf-8")
            same = config_from_text(text, self.config_path) == self.config
        except (OSError, ConfigError):
            return
        if same:
            hand_down_config(self.config_path, text, self.config)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    def spawn(self, child: Child) -> None:
        env = dict(os.environ, FLOODWATCH_ACTOR=child.name, FLOODWATCH_SUPERVISOR_PID=str(os.getpid()))
        child.proc = None
        if self.forks is not None and not self.forks.failed:
            try:
                child.proc = self.forks.spawn(child.module, ["--config", self.config_path], env)
            except OSError as e:
                log.error("zygote failed ({}): starting actors as plain processes from now on", e)
        if child.proc is None:
            argv = [sys.executable, "-m", child.module, "--config", self.config_path]
            child.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        now = time.monotonic()
        child.state, child.ready, child.started, child.started_wall = ChildState.STARTING, False, now, time.time()
        child.last_beat, child.heartbeat, child.restart_at, child.kill_at = 0.0, None, None, None
        child.policy.started(now)
        log.info("started {} (pid {})", child.name, child.proc.pid)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        for sig, flag in ((signal.SIGTERM, "term"), (signal.SIGINT, "term"), (signal.SIGHUP, "hup"),
                          (signal.SIGCHLD, "chld")):
            signal.signal(sig, lambda *_a, f=flag: self.flags.add(f))
        self.wake_r, wake_w = socket.socketpair()
        for s in (self.wake_r, wake_w):
            s.setblocking(False)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        self.poller.register(self.wake_r.fileno(), zmq.POLLIN)
        with self:
            self.start_actors()
            while "term" not in self.flags and self.exit_code == 0:
                self._tick()
        return self.exit_code

    def run_until(self, done: Callable[[], bool], timeout: float, wake_on: Sequence[zmq.Socket] = ()) -> Outcome:
        """For an embedding program, inside `with supervisor:`: start the actors and supervise them until
        done() (asked at every wake-up) holds, a critical actor fails for good, or `timeout` seconds pass.
        A message on one of the `wake_on` sockets (the caller's own) wakes the loop at once."""
        for sock in wake_on:
            self.poller.register(sock, zmq.POLLIN)
        if not self.children and not self.pending:
            self.start_actors()
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._tick(deadline)
                finished = done()
                if self.exit_code:
                    return Outcome.FAILED
                if finished:
                    return Outcome.DONE
                if time.monotonic() >= deadline:
                    return Outcome.TIMED_OUT
        finally:
            for sock in wake_on:
                self.poller.unregister(sock)

    def failed(self) -> list[str]:
        """The actors that failed for good (flapped), by name."""
        return [c.name for c in self.children.values() if c.state is ChildState.FAILED]

    def start_actors(self) -> None:
        """Start the configured actors in dependency order, each once the one before is ready."""
        self.pending = actor_names(self.config)
        self.notifier.status(f"starting {len(self.pending)} actors")
        self._start_pending()

    def _start_pending(self) -> None:
        while self.pending:
            if any(c.state == ChildState.STARTING for c in self.children.values()):
                return
            name = self.pending.pop(0)
            self.children[name] = child = self._child(name)
            self.spawn(child)

    def _tick(self, until: float | None = None) -> None:
        """One wake-up: wait for a message, a signal or the next deadline, then act on what is due."""
        assert self.router is not None
        wait = self.next_wait() if until is None else min(self.next_wait(), max(0.0, until - time.monotonic()))
        ready = dict(self.poller.poll(math.ceil(wait * 1000)))  # no busy loop below 1 ms
        if self.wake_r is not None and self.wake_r.fileno() in ready:
            with contextlib.suppress(BlockingIOError):
                while self.wake_r.recv(512):
                    pass
        if self.router in ready:
            for _ in range(256):
                try:
                    ident, *rest = self.router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if rest:
                    self.on_control(ident, rest[-1])
        if "chld" in self.flags:
            self.flags.discard("chld")
            self.reap_strays()
        if "hup" in self.flags:
            self.flags.discard("hup")
            self.reload()
        now = time.monotonic()
        for child in list(self.children.values()):
            self.check(child, now)
        self._start_pending()
        self.retire_zygote()
        self.systemd(now)

    def retire_zygote(self) -> None:
        """Once every actor has started (none starting, waiting to restart or stopping to restart): the
        zygote exits; the next actor to start gets a new one (ForkServer)."""
        if self.forks is None or self.pending or self.forks.zygote is None:
            return
        settled = (ChildState.RUNNING, ChildState.FAILED, ChildState.STOPPED)
        if all(c.state in settled and not c.restart_on_exit for c in self.children.values()):
            self.forks.retire()
            # the library code only our imports ran (no actor maps those pages): out of memory (~2 MB)
            advised = page_out_files() if self.page_out else 0
            log.debug("every actor started: zygote retired, {} file mappings paged out", advised)

    def reap_strays(self) -> None:
        """Reap orphans we inherited as a subreaper, leaving our own actors' exits to check()."""
        ours = {c.proc.pid for c in self.children.values() if c.proc is not None}
        if self.forks is not None and self.forks.pid is not None:
            ours.add(self.forks.pid)
        reap_orphans(ours)

    def next_wait(self) -> float:
        """Sleep until the next deadline (a restart, a SIGKILL, a heartbeat or start-up timeout), at most
        TICK; SIGCHLD wakes us."""
        s = self.config.supervisor
        deadlines = [d for c in self.children.values() for d in (c.restart_at, c.kill_at) if d is not None]
        for c in self.children.values():
            if c.state == ChildState.RUNNING:
                deadlines.append(c.last_beat + s.heartbeat_timeout + 0.001)
            elif c.state == ChildState.STARTING:
                deadlines.append(c.started + s.start_timeout + 0.001)
        if self.notifier.watchdog_interval and self.announced_ready:
            deadlines.append(self.next_watchdog)
        if self.pending:
            deadlines.append(time.monotonic() + 0.02)
        wait = min([TICK, *(d - time.monotonic() for d in deadlines)])
        return max(0.0, wait)

    def on_control(self, ident: bytes, data: bytes) -> None:
        try:
            msg = messages.decode(data)
        except messages.MessageDecodeError as e:
            self.bad_control += 1
            log.warning("bad control message from {!r}: {}", ident[:32], e)
            return
        child = self.children.get(ident.decode(errors="replace"))
        if isinstance(msg, ActorHello):
            ok = child is None or child.pid in (None, msg.pid)  # unmanaged: a standalone actor
            reason = "" if ok else f"actor {msg.actor} already runs under this supervisor"
            self._reply(ident, ActorHelloAck(ok=ok, reason=reason))
        elif isinstance(msg, ActorReady) and child is not None:
            child.ready, child.last_beat = True, time.monotonic()
            if child.state == ChildState.STARTING:
                child.state = ChildState.RUNNING
        elif isinstance(msg, ActorHeartbeat) and child is not None and msg.pid == child.pid:
            child.heartbeat, child.last_beat = msg, time.monotonic()
        elif isinstance(msg, StatusRequest):
            self._reply(ident, self.status_reply(msg.nonce))

    def _reply(self, ident: bytes, msg: messages.Message) -> None:
        assert self.router is not None
        with contextlib.suppress(zmq.ZMQError):  # the asker went away
            self.router.send_multipart([ident, messages.encode(msg)], zmq.NOBLOCK)

    def status_reply(self, nonce: str) -> StatusReply:
        now = time.monotonic()
        sup = {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_wall, 3),
            "config": self.config_path,
            "ready": self.announced_ready,
            "reloads": self.reloads,
            "zygote_pid": self.forks.pid if self.forks is not None else None,
            "zygote": self.forks.state if self.forks is not None else "off",
            "bad_control_messages": self.bad_control,
        }
        return StatusReply(nonce=nonce, supervisor=sup, actors=[c.row(now) for c in self.children.values()])

    def check(self, child: Child, now: float) -> None:
        s = self.config.supervisor
        proc = child.proc
        code = proc.poll() if proc is not None else None
        if code is not None:
            self.exited(child, code, now)
            return
        if child.state == ChildState.BACKOFF and child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self.spawn(child)
        elif child.state == ChildState.STOPPING and child.kill_at is not None and now >= child.kill_at and proc:
            log.warning("{} did not stop within {:g} s: SIGKILL", child.name, s.stop_timeout)
            proc.kill()
            child.kill_at = None
        elif child.state == ChildState.RUNNING and now - child.last_beat > s.heartbeat_timeout:
            self.terminate(child, f"no heartbeat for {now - child.last_beat:.1f} s (hung)", now)
        elif child.state == ChildState.STARTING and now - child.started > s.start_timeout:
            self.terminate(child, f"not ready within {s.start_timeout:g} s", now)

    def terminate(self, child: Child, why: str, now: float) -> None:
        log.error("{}: {}: SIGTERM", child.name, why)
        if child.proc is not None:
            child.proc.terminate()
        child.state, child.why_stopping = ChildState.STOPPING, why
        child.kill_at = now + self.config.supervisor.stop_timeout

    def exited(self, child: Child, code: int, now: float) -> None:
        child.last_exit, child.proc = code, None
        if child.restart_on_exit:
            child.restart_on_exit = False
            child.restarts += 1
            self.spawn(child)
            return
        decision = child.policy.exited(now)
        why = child.why_stopping or f"exited with {code}"
        child.why_stopping = ""
        if decision.restart:
            child.state, child.restart_at = ChildState.BACKOFF, now + decision.delay
            log.warning("{} {}; restart in {:.2f} s", child.name, why, decision.delay)
            return
        child.state = ChildState.FAILED
        log.critical("{} {}; giving up: {}", child.name, why, decision.reason)
        self.notifier.status(f"{child.name} failed: {decision.reason}")
        if child.critical:
            self.exit_code = 1

    def systemd(self, now: float) -> None:
        if not self.announced_ready and self.children and not self.pending and all(
            c.ready or c.state == ChildState.FAILED for c in self.children.values()
        ):
            self.announced_ready = True
            self.notifier.ready(f"{len(self.children)} actors running")
            log.info("all actors ready")
        interval = self.notifier.watchdog_interval
        # systemd arms the watchdog once start-up completes (READY=1); ping from then on while healthy
        if interval and self.announced_ready and now >= self.next_watchdog and self.healthy():
            self.notifier.watchdog()
            self.next_watchdog = now + interval

    def healthy(self) -> bool:
        return all(c.state != ChildState.FAILED for c in self.children.values() if c.critical)

    # -- reload and stop ---------------------------------------------------------------------------
    def reload(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("SIGHUP: keeping the running config: {}", e)
            return
        self.reloads += 1
        everything = any(getattr(new, s) != getattr(self.config, s) for s in ("agent", "bus", "log"))
        old, self.config = self.config, new
        wanted = actor_names(new)
        for name in [n for n in self.children if n not in wanted]:
            self.stop_child(self.children.pop(name))
        for name in wanted:
            child = self.children.get(name)
            if child is None:
                self.children[name] = child = self._child(name)
                self.spawn(child)
                continue
            child.policy.s = new.supervisor
            child.critical = name in new.supervisor.critical
            changed = everything or _section(old, name) != _section(new, name)
            if changed and child.proc is not None:
                log.info("SIGHUP: {} config changed: restarting it", name)
                child.restart_on_exit = True
                self.terminate(child, "config changed", time.monotonic())
        self.notifier.status(f"config reloaded ({self.reloads})")

    def stop_child(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            child.state = ChildState.STOPPED
            return
        proc.terminate()
        try:
            proc.wait(self.config.supervisor.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("{} did not stop within {:g} s: SIGKILL", child.name, self.config.supervisor.stop_timeout)
            proc.kill()
            proc.wait(5)
        child.state, child.proc = ChildState.STOPPED, None
        log.info("stopped {}", child.name)

    def shutdown(self) -> None:
        """Stop every actor (reverse start order), the proxy and the zygote. Once only."""
        if self.ctx.closed:
            return
        self.notifier.stopping()
        for child in reversed(list(self.children.values())):
            self.stop_child(child)
        if self.router is not None:
            self.router.close(0)
            self.router = None
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.forks is not None:
            self.forks.close()
        self.ctx.term()
        self.notifier.close()
        log.info("supervisor stopped (exit {})", self.exit_code)


def _section(config: Config, name: str) -> Any:
    try:
        return config.section(name)
    except ConfigError:
        return config.supervisor.modules.get(name)
