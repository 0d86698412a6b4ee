"""Helpers for the API server's tests: the server as a real subprocess, a small real HTTP client."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import PYTHON, REPO, eventually


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m floodwatch.server ARGS` as a real process."""
    proc = subprocess.run([PYTHON, "-m", "floodwatch.server", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"server CLI {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def cli_inproc(*args: str) -> Any:
    """The same CLI in this process (faster); returns its parsed --json output."""
    from floodwatch.server.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*args, "--json"])
    assert rc == 0, f"server CLI {args} failed with {rc}"
    return json.loads(out.getvalue())


@dataclass
class Node:
    uuid: str
    key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "X-Node-UUID": self.uuid}


@dataclass(frozen=True)
class Backend:
    """Where a test server keeps its data: SQLite (a file in its directory) or a PostgreSQL database."""

    kind: str = "sqlite"  # or "postgresql"
    url: str = ""
    password_file: str = ""
    config: str = ""  # a config file naming the storage in [apiserver] instead of options

    def args(self, db: Path) -> list[str]:
        """The server CLI's options naming this storage (`--db PATH` for SQLite)."""
        if self.config:
            return ["--config", self.config]
        if self.kind == "sqlite":
            return ["--db", str(db)]
        return ["--database", self.url, "--password-file", self.password_file]


def pg_backend(cluster: Any, tmp: Path) -> Backend:
    """A fresh database on the test cluster (tests/pgcluster.py), its password in a 0600 file."""
    pw = tmp / f"pgpass-{secrets.token_hex(3)}"
    pw.touch(mode=0o600)
    pw.write_text(cluster.password + "\n")
    return Backend("postgresql", cluster.new_database(), str(pw))


@dataclass
class ServerProc:
    """`python -m floodwatch.server --listen 127.0.0.1:0 --db ...` (or `--database postgresql://...`)
    with its bound port."""

    tmp: Path
    extra: list[str] = field(default_factory=list)
    wrap: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS]: run it there
    backend: Backend = field(default_factory=Backend)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def db(self) -> Path:
        return self.tmp / "server.db"

    @property
    def store_args(self) -> list[str]:
        """Options of the operator CLI for this server's storage."""
        return [*self.backend.args(self.db), "--pcap-dir", str(self.pcap_dir)]

    @property
    def pcap_dir(self) -> Path:
        return self.tmp / "server-pcaps"

    def open_store(self) -> Any:
        """The server's store opened in this process (SQLiteStore or PGStore), for tests to look inside."""
        if self.backend.kind == "sqlite":
            from floodwatch.server.sqlite_store import SQLiteStore

            return SQLiteStore(self.db, create=False)
        from floodwatch.server.backend import read_password
        from floodwatch.server.pg_store import PGStore

        return PGStore(self.backend.url, read_password(self.backend.password_file), max_size=1)

    def start(self) -> ServerProc:
        self.tmp.mkdir(parents=True, exist_ok=True)
        port_file = self.tmp / f"port-{secrets.token_hex(3)}"
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*self.wrap, PYTHON, "-m", "floodwatch.server", "--listen", "127.0.0.1:0", *self.store_args,
             "--port-file", str(port_file), *self.extra],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        log.close()

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"server exited: {self.log()}"
            return port_file.exists() and port_file.read_text().strip().isdigit()

        eventually(ready, 30, message="server listening")
        self.port = int(port_file.read_text())
        return self

    def log(self) -> str:
        p = self.tmp / "server.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def add_node(self, name: str | None = None) -> Node:
        out = cli_inproc("add-node", name or f"node-{secrets.token_hex(4)}", *self.store_args)
        return Node(out["node_uuid"], out["api_key"])

    def request(self, method: str, path: str, body: Any = None, node: Node | None = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None, timeout: float = 30) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(node.headers() if node else {})
            h.update(headers or {})
            data = raw
            if data is None and body is not None:
                data = json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            url = path if path.startswith("/api/") else f"/api/v1/agent/{path.lstrip('/')}"
            conn.request(method, url, body=data, headers=h)
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, node: Node | None = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, node, **kw)


def multipart(fields: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """(name, filename or None, content) parts -> (body, content type)."""
    boundary = "fwtest" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, filename, content in fields:
        out.write(f"--{boundary}\r\n".encode())
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.write(f"Content-Disposition: {disp}\r\n".encode())
        if filename is not None:
            out.write(b"Content-Type: application/vnd.tcpdump.pcap\r\n")
        out.write(b"\r\n" + content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(srv: ServerProc, node: Node, incident_id: int | str, content: bytes,
           filename: str = "capture.pcap") -> Reply:
    body, ctype = multipart([("incident_id", None, str(incident_id).encode()), ("file", filename, content)])
    return srv.request("POST", "pcap", node=node, raw=body, headers={"Content-Type": ctype})


def incident_body(key: str | None = None, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "incident_key": key or secrets.token_hex(16), "attack_family": "udp_flood", "severity": "high",
        "status": "active", "started_at": "2026-11-28T10:00:00Z", "peak_pps": 120000, "peak_bps": 9_000_000,
        "protocol_breakdown": {"tcp": 2.0, "udp": 97.5, "icmp": 0.5}, "tcp_flag_breakdown": {"SYN": 10},
        "geo_breakdown": {"US": 40}, "source_ip_count": 200, "top_src_ips": [{"ip": "198.18.0.9", "count": 500}],
        "top_dst_ports": [{"port": 53, "count": 900}], "ioc_matches": [], "spoofing_detected": False,
        "botnet_detected": False, "confidence": 90, "attack_subtype": "dns_amplification",
        "target_ips": ["198.18.0.1"]}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


@contextlib.contextmanager
def running(tmp: Path, *extra: str, backend: Backend | None = None) -> Iterator[ServerProc]:
    srv = ServerProc(tmp, list(extra), backend=backend or Backend()).start()
    try:
        yield srv
    finally:
        srv.stop()


def admin_headers(srv: ServerProc) -> dict[str, str]:
    """The Authorization header of a new admin token for this server."""
    return {"Authorization": "Bearer " + cli_inproc("admin-token", *srv.store_args)["admin_token"]}
