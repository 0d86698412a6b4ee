"""Reporter test support: the actor as a real process on a bus harness, and a scriptable fake API.

The fake API is only for what the real embedded server cannot do on purpose: answer garbage, answer
200 with HTML, never answer, or lose a response after storing. Everything else uses the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from floodwatch.messages import (
    CommandFinished,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    PcapSaved,
    TrafficSecond,
)
from tests.helpers import (
    PYTHON,
    REPO,
    BusHarness,
    base_config,
    eventually,
    free_port,
    start_actor,
    stop_process,
    write_config,
)

REPORTER_TOPICS = (TrafficSecond, IncidentOpened, IncidentUpdated, IncidentResolved, PcapSaved, CommandFinished)


def reporter_settings(url: str, api_key: str, node_uuid: str, **over: Any) -> dict[str, Any]:
    """Fast intervals for tests: retries within a second, short timeouts."""
    s: dict[str, Any] = {
        "url": url, "api_key": api_key, "node_uuid": node_uuid, "heartbeat_interval": 1.0,
        "config_interval": 1.0, "backoff_initial": 0.2, "backoff_max": 1.0, "auth_backoff": 0.5,
        "connect_timeout": 1.0, "request_timeout": 3.0, "metrics_interval": 0.0,  # each sample at once
        "dialect": "published",  # parts A/B, which FakeApi speaks; the flowtriq dialect has its own tests
    }
    s.update(over)
    return s


@dataclass
class ReporterProc:
    harness: BusHarness
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    published_before: int = 0  # events the harness had published when this process started

    def start(self) -> ReporterProc:
        self.published_before = self._published()
        self.harness.ready.discard("reporter")
        self.harness.heartbeats.pop("reporter", None)
        self.proc = start_actor("reporter", self.config, self.log)
        self.harness.wait_ready("reporter", timeout=30)
        for cls in REPORTER_TOPICS:
            self.harness.wait_subscribed(cls.TOPIC)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def counters(self) -> dict[str, Any]:
        return self.harness.counters("reporter")

    def health(self) -> str:
        hb = self.harness.heartbeats.get("reporter")
        return hb.health if hb else ""

    def pending(self) -> int:
        return int(self.counters().get("outbox_pending", -1))

    def fresh_counters(self) -> dict[str, Any]:
        """Counters from a heartbeat sent after this call (not a stale one)."""
        before = self.harness.heartbeats.get("reporter")
        eventually(lambda: self.harness.heartbeats.get("reporter") is not before, 10, message="a new heartbeat")
        return self.counters()

    def _published(self) -> int:
        return sum(self.harness.published[cls.TOPIC] for cls in REPORTER_TOPICS)

    def wait_drained(self, timeout: float = 30.0) -> None:
        """Every event the test published since this start taken in, and the outbox empty.

        An empty outbox alone is not enough: a heartbeat sent before the reporter read the events just
        published says 0 pending too."""
        sent = self._published() - self.published_before

        def drained() -> bool:
            c = self.fresh_counters()
            return int(c.get("in", 0)) >= sent and c.get("outbox_pending") == 0

        eventually(drained, timeout, interval=0.1,
                   message=f"reporter took in the {sent} events published and emptied its outbox")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def reporter(tmp_path: Path, harness: BusHarness, settings: dict[str, Any], name: str = "reporter"
             ) -> Iterator[ReporterProc]:
    cfg = base_config(tmp_path, harness.endpoints, reporter=settings)
    cfg["supervisor"]["heartbeat_interval"] = 0.1
    path = write_config(tmp_path / f"{name}.toml", cfg)
    rp = ReporterProc(harness, path, tmp_path / f"{name}.log")
    try:
        yield rp.start()
    finally:
        rp.stop()


# --------------------------------------------------------------------------------------------------
# A scriptable fake of the Agent API (aiohttp in a thread of the test process)


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    at: float
    headers: dict[str, str] = field(default_factory=dict)


Answer = tuple[int, bytes, dict[str, str]]


class FakeApi:
    """Answers like a minimal correct server unless told otherwise per path."""

    def __init__(self, ssl_context: Any = None) -> None:
        self.port = free_port()
        self.ssl_context = ssl_context
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/api/v1/agent"
        self.seen: list[Seen] = []
        self.incidents: dict[str, int] = {}  # incident_key -> id
        self.incident_bodies: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.config: Any = {"node_id": 1, "pending_commands": []}
        self.canned: dict[str, list[Answer]] = {}  # path -> answers used (and consumed) first
        self.hang: set[str] = set()  # paths that never answer
        self.store_then_hang: set[str] = set()  # store the report, then never answer (a lost response)
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/v1/agent/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()

    async def _stop(self) -> None:
        assert self._release is not None and self._runner is not None
        self._release.set()
        await self._runner.cleanup()

    def requests(self, path: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw and request.content_type == "application/json" else raw
        except ValueError:
            body = raw
        self.seen.append(Seen(request.method, path, body, time.monotonic(), dict(request.headers)))
        assert self._release is not None
        if path in self.hang:
            await self._release.wait()
        if self.canned.get(path):
            status, data, headers = self.canned[path].pop(0)
            return web.Response(status=status, body=data, headers=headers)
        answer = self._behave(path, body)
        if path in self.store_then_hang:
            await self._release.wait()
        return answer

    def _behave(self, path: str, body: Any) -> web.Response:
        if path == "incident":
            key = body["incident_key"]
            if "incident_id" not in body:
                self.incidents.setdefault(key, next(self._ids))
            self.incident_bodies.append(body)
            return web.json_response({"incident_id": self.incidents[key]})
        if path == "metrics":
            self.metrics.extend(body if isinstance(body, list) else [body])
            return web.json_response({"stored": len(body) if isinstance(body, list) else 1})
        if path == "commands/ack":
            self.acks.append(body)
            return web.json_response({"ok": True})
        if path == "config":
            if isinstance(self.config, bytes):
                return web.Response(body=self.config, content_type="text/html")
            return web.json_response(self.config)
        return web.json_response({"ok": True})


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr, ext = directory / "srv.pem", directory / "srv.key", directory / "srv.csr", directory / "ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=floodwatch test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, message: str = "") -> Any:
    return eventually(pred, timeout, interval=0.05, message=message)


# --------------------------------------------------------------------------------------------------
# The real embedded server (floodwatch/server, docs/server.md) as a process


class ServerProc:
    """`python -m floodwatch.server` on a fixed loopback port, so it can be stopped and started again."""

    def __init__(self, directory: Path, *extra: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.db = directory / "server.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1/agent"
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> Any:
        out = subprocess.run([PYTHON, "-m", "floodwatch.server", *args, "--db", str(self.db), "--json"],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def add_node(self, name: str = "agent") -> tuple[str, str]:
        node = self.cli("add-node", name)
        return node["node_uuid"], node["api_key"]

    def start(self) -> ServerProc:
        port_file = self.dir / "port"
        port_file.unlink(missing_ok=True)
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "floodwatch.server", "--listen", f"127.0.0.1:{self.port}", "--db", str(self.db),
             "--port-file", str(port_file), *self.extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        eventually(lambda: port_file.exists() or proc.poll() is not None, 30, message="server listening")
        assert proc.poll() is None, (self.dir / "server.log").read_text()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def incidents(self) -> list[dict[str, Any]]:
        return list(reversed(self.cli("incidents")))  # oldest first

    def store(self) -> Any:
        from floodwatch.server.sqlite_store import SQLiteStore

        return SQLiteStore(self.db, create=False)

    def history(self, incident_id: int) -> list[dict[str, Any]]:
        st = self.store()
        try:
            return list(st.incident(incident_id)["history"])
        finally:
            st.close()

    def metrics(self) -> list[dict[str, Any]]:
        st = self.store()
        try:
            return list(st.metrics(1, 0.0, 1_000_000))
        finally:
            st.close()


@contextlib.contextmanager
def server(tmp_path: Path, *extra: str) -> Iterator[ServerProc]:
    srv = ServerProc(tmp_path / "server", *extra)
    try:
        yield srv
    finally:
        srv.stop()
