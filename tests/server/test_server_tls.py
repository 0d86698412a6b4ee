"""The server speaking TLS itself (a subprocess with a certificate made at test time by openssl), and the
reporter's own client verifying it."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fwserver_util import Backend, Node, ServerProc, admin_headers

from floodwatch.config import load_config
from floodwatch.errors import ConfigError
from floodwatch.reporter.client import ApiClient, ApiUnreachable
from floodwatch.settings.reporter import ReporterSettings
from tests.helpers import PYTHON, REPO
from tests.reporter.support import make_tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca, cert, key = make_tls(tmp_path_factory.mktemp("tls"))
    key.chmod(0o600)
    return ca, cert, key


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tls: tuple[Path, Path, Path],
        backend: Backend) -> Iterator[ServerProc]:
    _, cert, key = tls
    s = ServerProc(tmp_path_factory.mktemp("tlssrv"), ["--tls-cert", str(cert), "--tls-key", str(key),
                                                       "--max-connections-per-address", "2"], backend=backend)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def https(srv: ServerProc, ca: Path, method: str, path: str, headers: dict[str, str] | None = None,
          conn: http.client.HTTPSConnection | None = None) -> tuple[int, Any]:
    c = conn or http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=15,
                                            context=ssl.create_default_context(cafile=str(ca)))
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        if conn is None:
            c.close()


async def reporter_heartbeat(srv: ServerProc, node: Node, ca_bundle: str) -> int:
    settings = ReporterSettings(url=f"https://127.0.0.1:{srv.port}/api/v1/agent", ca_bundle=ca_bundle,
                                node_uuid=node.uuid)
    client = ApiClient(settings, node.key, node.uuid)
    try:
        answer = await client.call("POST", "heartbeat", json={"agent_version": "tls-test", "uptime": 1})
        return answer.status
    finally:
        await client.close()


def test_the_reporter_client_talks_to_the_tls_server_when_it_trusts_the_ca(srv: ServerProc,
                                                                           tls: tuple[Path, Path, Path]) -> None:
    ca = tls[0]
    node = srv.add_node("tls-node")
    assert asyncio.run(reporter_heartbeat(srv, node, str(ca))) == 200
    status, nodes = https(srv, ca, "GET", "/api/v1/admin/nodes", admin_headers(srv))
    assert status == 200
    assert {n["name"]: n for n in nodes}["tls-node"]["agent_version"] == "tls-test"
    assert f"listening on https://127.0.0.1:{srv.port}/api/v1/agent" in srv.log()


def test_the_reporter_client_refuses_a_certificate_it_cannot_verify(srv: ServerProc) -> None:
    node = srv.add_node()
    with pytest.raises(ApiUnreachable, match=r"(?i)certificate verify failed"):
        asyncio.run(reporter_heartbeat(srv, node, ""))  # the system's CAs do not know the test CA


def test_plain_http_to_the_tls_port_gets_no_http_answer(srv: ServerProc) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/api/v1/health")
        conn.getresponse()
    conn.close()


def test_the_connection_cap_answers_inside_tls(srv: ServerProc, tls: tuple[Path, Path, Path]) -> None:
    ca = tls[0]
    ctx = ssl.create_default_context(cafile=str(ca))
    held = [http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=15, context=ctx) for _ in range(2)]
    try:
        assert all(https(srv, ca, "GET", "/api/v1/health", conn=c)[0] == 200 for c in held)  # kept alive
        status, body = https(srv, ca, "GET", "/api/v1/health")
        assert status == 503 and "too many connections from 127.0.0.1" in body["error"]
    finally:
        for c in held:
            c.close()


def test_a_slow_tls_handshake_is_closed(tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    _, cert, key = tls
    s = ServerProc(tmp_path, ["--tls-cert", str(cert), "--tls-key", str(key), "--header-timeout", "1"]).start()
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as raw:
            raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
            assert raw.recv(1024) == b""  # closed by the server within the handshake timeout
    finally:
        s.stop()


def run_server(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "floodwatch.server", "--listen", "127.0.0.1:0", "--db", str(tmp / "db"),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_bad_tls_settings_stop_the_server_with_a_clear_error(tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls
    loose = tmp_path / "loose.key"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    cases = [(["--tls-cert", str(cert)], "tls_cert and tls_key go together"),
             (["--tls-cert", str(cert), "--tls-key", str(loose)], "readable by others"),
             (["--tls-cert", str(ca), "--tls-key", str(key)], "cannot load"),
             (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)], "cannot load")]
    for args, message in cases:
        proc = run_server(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stdout + proc.stderr, (args, proc.stderr)
        assert "listening" not in proc.stdout


def test_tls_settings_in_the_config_file(tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    _, cert, key = tls
    path = tmp_path / "floodwatch.toml"
    path.write_text(f'[apiserver]\ntls_cert = "{cert}"\ntls_key = "{key}"\nheader_timeout = 5.0\n'
                    f"max_connections = 50\nmax_connections_per_address = 10\n")
    settings = load_config(path).apiserver
    assert (settings.tls_cert, settings.tls_key, settings.header_timeout) == (str(cert), str(key), 5.0)
    assert (settings.max_connections, settings.max_connections_per_address) == (50, 10)
    path.write_text(f'[apiserver]\ntls_cert = "{cert}"\n')
    with pytest.raises(ConfigError, match=r"apiserver\.tls_cert"):
        load_config(path)
    path.write_text("[apiserver]\nmax_connections = 0\n")
    with pytest.raises(ConfigError, match=r"apiserver\.max_connections"):
        load_config(path)
