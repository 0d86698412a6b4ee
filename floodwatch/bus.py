"""ZeroMQ sockets by purpose, and where they live: every socket of floodwatch is built here.

Events: PUB -> proxy XSUB (`events_in`), proxy XPUB (`events_out`) -> SUB. Bulk: PUSH/PULL with explicit
high-water marks, the consumer binds. Control: the supervisor's ROUTER, a DEALER per actor (and per
`floodwatch status`). Every socket has LINGER 0 and a MAXMSGSIZE; a library error becomes BusError.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import zmq

from floodwatch import messages
from floodwatch.errors import BusError
from floodwatch.settings.core import AgentSettings, BusSettings

CONTROL_MAX_BYTES = 1024 * 1024  # control messages are small: a bigger frame is refused unread
# A subscriber that probes the proxy with its own topic until a probe comes back (then its PUB and SUB
# both carry messages) sends again after this many ms without one: a probe sent before the subscription
# reached the proxy is gone, and the subscription takes a few ms (each actor's start waited 20 ms here)
PROBE_EVERY_MS = 2


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


def _sock(ctx: zmq.Context, kind: int, endpoint: str, bind: bool, hwm: int | None = None,
          max_bytes: int = messages.MAX_MESSAGE_BYTES, options: dict[int, int | bytes] | None = None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    for opt, value in (options or {}).items():
        sock.setsockopt(opt, value)
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
    """An actor's (or the CLI's) end of the control channel, named by `identity`."""
    return _sock(ctx, zmq.DEALER, endpoint, bind=False, max_bytes=CONTROL_MAX_BYTES,
                 options={zmq.IDENTITY: identity.encode()})


def router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """The supervisor's end of the control channel; a restarted actor takes over its identity."""
    return _sock(ctx, zmq.ROUTER, endpoint, bind=True, max_bytes=CONTROL_MAX_BYTES,
                 options={zmq.ROUTER_HANDOVER: 1})


def proxy_ends(ctx: zmq.Context, ep: Endpoints, hwm: int) -> tuple[zmq.Socket, zmq.Socket]:
    """The event proxy's XSUB (`events_in`) and XPUB (`events_out`), bound."""
    xsub = _sock(ctx, zmq.XSUB, ep.events_in, bind=True, hwm=hwm)
    try:
        return xsub, _sock(ctx, zmq.XPUB, ep.events_out, bind=True, hwm=hwm)
    except BusError:
        xsub.close(0)
        raise


def pair(ctx: zmq.Context, endpoint: str, bind: bool) -> zmq.Socket:
    """One end of an in-process PAIR (steering a proxy thread)."""
    return _sock(ctx, zmq.PAIR, endpoint, bind=bind)


def push(ctx: zmq.Context, endpoint: str, hwm: int) -> zmq.Socket:
    return _sock(ctx, zmq.PUSH, endpoint, bind=False, hwm=hwm)


def pull(ctx: zmq.Context, endpoint: str, hwm: int) -> zmq.Socket:
    return _sock(ctx, zmq.PULL, endpoint, bind=True, hwm=hwm)


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; not exported by Python


def udp_listener(host: str, port: int, rcvbuf: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port for flow export datagrams (the collector's input)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:  # as root past net.core.rmem_max: exporters send in bursts
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise BusError(f"cannot listen on udp {host}:{port}: {e.strerror or e}") from e
    return sock
