"""ZeroMQ sockets by purpose, and where they live.

Events: PUB -> proxy XSUB (`events_in`), proxy XPUB (`events_out`) -> SUB. Bulk: PUSH/PULL with explicit
high-water marks, the consumer binds. Control: the supervisor's ROUTER, a DEALER per actor.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq

from floodwatch import messages
from floodwatch.errors import BusError
from floodwatch.settings.core import AgentSettings, BusSettings


@dataclass(frozen=True)
class Endpoints:
    events_in: str
    events_out: str
    control: str
    packets: str
    frames: str


def endpoints(bus: BusSettings, agent: AgentSettings) -> Endpoints:
    """Config endpoints with empty ones resolved to ipc:// sockets under the runtime directory."""

    def pick(value: str, name: str) -> str:
        return value or f"ipc://{Path(agent.runtime_dir) / (name + '.sock')}"

    return Endpoints(
        events_in=pick(bus.events_in, "events-in"),
        events_out=pick(bus.events_out, "events-out"),
        control=pick(bus.control, "control"),
        packets=pick(bus.packets, "packets"),
        frames=pick(bus.frames, "frames"),
    )


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def prepare_ipc(endpoint: str) -> None:
    """Make the directory of an ipc endpoint (0700): only root may talk to the agent."""
    path = ipc_path(endpoint)
    if path is not None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _sock(ctx: zmq.Context, kind: int, endpoint: str, bind: bool, hwm: int | None = None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, messages.MAX_MESSAGE_BYTES)
    try:
        if bind:
            prepare_ipc(endpoint)
            sock.bind(endpoint)
            path = ipc_path(endpoint)
            if path is not None:
                os.chmod(path, 0o600)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        verb = "bind" if bind else "connect"
        raise BusError(f"cannot {verb} on {endpoint}: {e}") from e
    return sock


def pub(ctx: zmq.Context, ep: Endpoints, hwm: int) -> zmq.Socket:
    return _sock(ctx, zmq.PUB, ep.events_in, bind=False, hwm=hwm)


def sub(ctx: zmq.Context, ep: Endpoints, topics: list[str], hwm: int) -> zmq.Socket:
    sock = _sock(ctx, zmq.SUB, ep.events_out, bind=False, hwm=hwm)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    return sock


def dealer(ctx: zmq.Context, endpoint: str, identity: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise BusError(f"cannot connect control DEALER to {endpoint}: {e}") from e
    return sock


def push(ctx: zmq.Context, endpoint: str, hwm: int) -> zmq.Socket:
    return _sock(ctx, zmq.PUSH, endpoint, bind=False, hwm=hwm)


def pull(ctx: zmq.Context, endpoint: str, hwm: int) -> zmq.Socket:
    return _sock(ctx, zmq.PULL, endpoint, bind=True, hwm=hwm)


class EventProxy:
    """The XSUB/XPUB proxy every actor's PUB and SUB connect to; runs in a thread of the supervisor."""

    def __init__(self, ctx: zmq.Context, ep: Endpoints, hwm: int) -> None:
        self._ctx = ctx
        self._ep = ep
        self._hwm = hwm
        self._thread: threading.Thread | None = None
        self._ctl_endpoint = f"inproc://proxy-ctl-{id(self)}"
        self._ctl: zmq.Socket | None = None

    def start(self) -> None:
        xsub = _sock(self._ctx, zmq.XSUB, self._ep.events_in, bind=True, hwm=self._hwm)
        xpub = _sock(self._ctx, zmq.XPUB, self._ep.events_out, bind=True, hwm=self._hwm)
        ctl_recv = self._ctx.socket(zmq.PAIR)
        ctl_recv.bind(self._ctl_endpoint)
        self._ctl = self._ctx.socket(zmq.PAIR)
        self._ctl.connect(self._ctl_endpoint)

        def run() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, ctl_recv)
            except zmq.ZMQError:
                pass
            finally:
                for s in (xsub, xpub, ctl_recv):
                    s.close(0)

        self._thread = threading.Thread(target=run, name="event-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._ctl is not None and self._thread is not None:
            self._ctl.send(b"TERMINATE")
            self._thread.join(timeout=2)
            self._ctl.close(0)
            self._ctl = None
