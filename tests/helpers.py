"""Test support: waiting with deadlines, free endpoints, config files, a bus harness, namespaces.

Everything here is real: real ZeroMQ sockets, real processes, real network namespaces.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import zmq

from floodwatch import messages, tomlw
from floodwatch.bus import Endpoints
from floodwatch.messages import ActorHeartbeat, ActorHello, ActorHelloAck, ActorReady, Message

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
T = TypeVar("T")


def eventually(pred: Callable[[], T | Literal[False] | None], timeout: float = 10.0, interval: float = 0.02,
               message: str = "") -> T:
    """Wait until pred() is truthy and return its value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {message or pred}; last={last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_endpoints() -> Endpoints:
    return Endpoints(*(f"tcp://127.0.0.1:{free_port()}" for _ in range(5)))


def ipc_endpoints(directory: Path) -> Endpoints:
    directory.mkdir(parents=True, exist_ok=True)
    names = ("events-in", "events-out", "control", "packets", "frames")
    return Endpoints(*(f"ipc://{directory / (n + '.sock')}" for n in names))


def base_config(tmp_path: Path, endpoints: Endpoints, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A config dict for tests: private dirs under tmp_path, fast intervals, the given endpoints."""
    cfg: dict[str, dict[str, Any]] = {
        "agent": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "bus": {
            "events_in": endpoints.events_in,
            "events_out": endpoints.events_out,
            "control": endpoints.control,
            "packets": endpoints.packets,
            "frames": endpoints.frames,
        },
        "supervisor": {
            "heartbeat_interval": 0.2,
            "heartbeat_timeout": 3.0,
            "hello_timeout": 3.0,
            "stop_timeout": 3.0,
            "start_timeout": 20.0,
        },
        "log": {"level": "INFO"},
        "metrics": {"listen": "127.0.0.1:0"},  # the agent's /metrics on any free port (tests run side by side)
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict[str, dict[str, Any]]) -> Path:
    path.write_text(tomlw.dumps(cfg))
    return path


class BusHarness:
    """A stand-in for the supervisor's side of the bus, in a thread of the test process.

    It runs the event proxy (recording subscriptions), answers actors' hello on the control ROUTER and
    keeps their latest heartbeat. The test publishes and subscribes with its own sockets.
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.ctx = zmq.Context()
        self.heartbeats: dict[str, ActorHeartbeat] = {}
        self.ready: set[str] = set()
        self.hellos: list[str] = []
        self.subscriptions: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bus-harness")
        self._pub: zmq.Socket | None = None
        self._bound = threading.Event()
        self.published: collections.Counter[str] = collections.Counter()  # messages sent by publish, per topic

    def __enter__(self) -> BusHarness:
        self._thread.start()
        assert self._bound.wait(5), "bus harness could not bind"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._pub is not None:
            self._pub.close(0)
        self.ctx.term()

    def _run(self) -> None:
        ep = self.endpoints
        xsub, xpub, router = self.ctx.socket(zmq.XSUB), self.ctx.socket(zmq.XPUB), self.ctx.socket(zmq.ROUTER)
        for s in (xsub, xpub, router):
            s.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        xsub.bind(ep.events_in)
        xpub.bind(ep.events_out)
        router.bind(ep.control)
        self._bound.set()
        poller = zmq.Poller()
        for s in (xsub, xpub, router):
            poller.register(s, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(50):
                    if sock is xsub:
                        xpub.send_multipart(xsub.recv_multipart())
                    elif sock is xpub:
                        frame = xpub.recv()
                        if frame[:1] == b"\x01":
                            self.subscriptions.add(frame[1:])
                        xsub.send(frame)
                    else:
                        ident, data = router.recv_multipart()
                        self._control(router, ident, data)
        finally:
            for s in (xsub, xpub, router):
                s.close(0)

    def _control(self, router: zmq.Socket, ident: bytes, data: bytes) -> None:
        try:
            msg = messages.decode(data)
        except messages.MessageDecodeError:
            return
        if isinstance(msg, ActorHello):
            self.hellos.append(msg.actor)
            router.send_multipart([ident, messages.encode(ActorHelloAck(ok=True))])
        elif isinstance(msg, ActorReady):
            self.ready.add(msg.actor)
        elif isinstance(msg, ActorHeartbeat):
            self.heartbeats[msg.actor] = msg

    def wait_ready(self, actor: str, timeout: float = 20.0) -> None:
        eventually(lambda: actor in self.ready, timeout, message=f"{actor} ready")

    def wait_subscribed(self, topic: str, timeout: float = 10.0) -> None:
        eventually(lambda: topic.encode() in self.subscriptions, timeout, message=f"subscriber for {topic}")

    def counters(self, actor: str) -> dict[str, Any]:
        hb = self.heartbeats.get(actor)
        return dict(hb.counters) if hb else {}

    def publish(self, msg: Message) -> None:
        """Publish from the test thread (after wait_subscribed for the receiver's topic)."""
        if self._pub is None:
            self._pub = self.ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.connect(self.endpoints.events_in)
            probe = Subscriber(self, ["harness.probe"])
            try:
                eventually(lambda: self._probe(probe), 10, message="harness publisher connected")
            finally:
                probe.close()
        self._pub.send_multipart(messages.frames(msg))
        self.published[msg.TOPIC] += 1

    def publish_raw(self, parts: list[bytes]) -> None:
        if self._pub is None:
            self.publish(messages.StatusRequest(nonce="warm-up"))
        assert self._pub is not None
        self._pub.send_multipart(parts)

    def _probe(self, probe: Subscriber) -> bool:
        assert self._pub is not None
        self._pub.send_multipart([b"harness.probe", b"x"])
        return probe.sock.poll(50, zmq.POLLIN) != 0

    def subscriber(self, *classes: type[Message]) -> Subscriber:
        sub = Subscriber(self, [c.TOPIC for c in classes])
        for c in classes:
            self.wait_subscribed(c.TOPIC)
        return sub


class Subscriber:
    """A SUB socket on the harness's proxy, for assertions on what actors publish."""

    def __init__(self, harness: BusHarness, topics: list[str]) -> None:
        self.sock = harness.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(harness.endpoints.events_out)

    def get(self, cls: type[T] | None = None, timeout: float = 10.0) -> T:
        """The next message (of class cls, skipping others) within timeout, else AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000), zmq.POLLIN):
                raise AssertionError(f"no {cls.__name__ if cls else 'message'} within {timeout} s")
            msg = messages.decode_frames(self.sock.recv_multipart())
            if cls is None or isinstance(msg, cls):
                return msg  # type: ignore[return-value]

    def drain(self, timeout: float = 0.2) -> list[Message]:
        out: list[Message] = []
        while self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            out.append(messages.decode_frames(self.sock.recv_multipart()))
        return out

    def close(self) -> None:
        self.sock.close(0)


def start_actor(name: str, config: Path, log: Path, netns: str | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m actors.<name> --config FILE` as a real process (optionally in a namespace)."""
    argv = [PYTHON, "-m", f"actors.{name}", "--config", str(config)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process we started, SIGKILL it if it does not go within timeout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"
    return True


# --------------------------------------------------------------------------------------------------
# Network namespaces joined by a veth pair. Only ever inside namespaces we create; always removed.


@dataclass
class NetnsPair:
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    ip4_a: str
    ip4_b: str
    ip6_a: str
    ip6_b: str
    mac_a: str
    mac_b: str

    def run(self, ns: str, argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], check=check, text=True,
                              capture_output=True, **kw)

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _mac(ns: str, ifname: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", ifname], check=True,
                         capture_output=True, text=True).stdout
    return out.split("link/ether")[1].split()[0]


@contextmanager
def netns_pair(prefix: str = "fwt") -> Iterator[NetnsPair]:
    """Two fresh namespaces A and B joined by veth (A: .1, B: .2 in 198.18.N.0/24 and fd00:N::/64).

    Names carry `prefix` plus random hex so parallel runs never collide; both namespaces (and with them
    the veth pair) are deleted on exit, also when the test fails.
    """
    tag = f"{prefix[:5]}{secrets.token_hex(3)}"
    ns_a, ns_b, if_a, if_b = f"{tag}a", f"{tag}b", f"{tag}va", f"{tag}vb"
    n = secrets.randbelow(250) + 1
    pair = NetnsPair(ns_a, ns_b, if_a, if_b, f"198.18.{n}.1", f"198.18.{n}.2",
                     f"fd00:{n:x}::1", f"fd00:{n:x}::2", "", "")
    created: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, v4, v6 in ((ns_a, if_a, pair.ip4_a, pair.ip6_a), (ns_b, if_b, pair.ip4_b, pair.ip6_b)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", ifname)
            _ip("-n", ns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            _ip("-n", ns, "link", "set", ifname, "up")
        pair.mac_a, pair.mac_b = _mac(ns_a, if_a), _mac(ns_b, if_b)
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def background_traffic(pair: NetnsPair, pps: float, seconds: float,
                       *extra: str) -> subprocess.Popen[bytes]:
    """`floodwatch traffic send udp_flood` from namespace A to B at a low rate, not waited for: the
    background traffic a real host always has (benchmarks)."""
    return pair.popen(pair.ns_a, [PYTHON, "-m", "floodwatch.cli", "traffic", "send", "udp_flood", "--iface", pair.if_a,
                                  "--pps", str(pps), "--duration", str(seconds), "--dst", pair.ip4_b,
                                  "--dst-mac", pair.mac_b, "--sources", "20", *extra],
                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def exit_on_sigterm() -> None:
    """For benchmark scripts: SIGTERM runs their `finally` blocks (namespaces removed, processes
    stopped) instead of Python's default, dying on the spot. Not for pytest, which must stay killable."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def have_root_netns() -> bool:
    if os.geteuid() != 0:
        return False
    probe = f"fwprobe{secrets.token_hex(2)}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


# --------------------------------------------------------------------------------------------------
# The supervisor as a real process


def start_supervisor(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen([PYTHON, "-m", "floodwatch.cli", "run", "--config", str(config)],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=full_env)


def status(config: Path, timeout: float = 3.0) -> dict[str, Any]:
    """`floodwatch status --json` through the same code path, as a dict keyed by actor name."""
    from floodwatch.cli import query_status
    from floodwatch.config import load_config

    reply = query_status(load_config(config), timeout)
    return {a["name"]: a for a in reply.actors}


def try_status(config: Path) -> dict[str, Any]:
    try:
        return status(config, timeout=1.0)
    except ConnectionError:
        return {}


def extract_commit(ref: str, into: Path) -> Path:
    """The tree of another commit (`git archive`), for a benchmark's same-run baseline (--ref)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into
