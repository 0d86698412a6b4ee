"""The fleet benchmark's load generator (benchmarks/fleet_agents.py) sends what the reporter sends.

Its requests are built from parts encoded once, for speed; these tests hold them to the reporter's own
client: byte for byte against what floodwatch.reporter.client.ApiClient puts on the wire for the same
reports (a real socket server records both), and, run as the benchmark runs it, against the real server:
every request answered 2xx and every sample, heartbeat and incident stored as the agent's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from floodwatch.reporter import dialect, mapping
from floodwatch.reporter.client import ApiClient
from floodwatch.server import auth
from floodwatch.settings.reporter import ReporterSettings
from tests.helpers import PYTHON, REPO
from tests.server.fwserver_util import ServerProc


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("fleet_agents", REPO / "benchmarks" / "fleet_agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fa = _load_generator()

NODE = {"Authorization": "Bearer fwk_" + "k" * 43, "X-Node-UUID": "0b1c2d3e-4f50-4a1b-8c2d-3e4f5a6b7c8d"}


async def _recorded(send: Any) -> list[bytes]:
    """Every request `send(port)` makes to a local server that answers each `200 {}`, as raw bytes."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            got.append(head + await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        await send(server.sockets[0].getsockname()[1])
    finally:
        server.close()
    return got


def _reporter_sends(calls: list[tuple[str, str, Any]]) -> tuple[int, list[bytes]]:
    async def send(port: int) -> None:
        client = ApiClient(ReporterSettings(url=f"http://127.0.0.1:{port}/api/v1/agent"),
                           NODE["Authorization"].split(" ", 1)[1], NODE["X-Node-UUID"])
        try:
            for method, path, body in calls:
                await client.call(method, path, json=body)
        finally:
            await client.close()

    port = 0

    async def run() -> list[bytes]:
        nonlocal port

        async def with_port(p: int) -> None:
            nonlocal port
            port = p
            await send(p)

        return await _recorded(with_port)

    got = asyncio.run(run())
    return port, got


def test_requests_are_the_reporters_byte_for_byte() -> None:
    """Metrics (from the per-second template), heartbeat, GET /config and an incident's open, update and
    resolution: the same request line, headers in the same order, the same JSON bytes."""
    rng = random.Random(7)
    t = float(int(time.time()))
    values = [fa.draw(rng) for _ in range(3)]
    hb = dialect.heartbeat(dialect.FLOWTRIQ, mapping.heartbeat_body(fa.__version__, 12.5, "bench"))
    key = "bench-0b1c2d3e-4f5"
    incidents = [fa.incident_request("open", key, t, 0, t, None),
                 fa.incident_request("update", key, t, 1, t + 5, "ab12"),
                 fa.incident_request("resolve", key, t, 2, t + 9, "ab12")]
    calls: list[tuple[str, str, Any]] = [
        ("POST", "metrics", mapping.metrics_sample(fa.second_of(t + i, pps, conn)))
        for i, (pps, conn) in enumerate(values)]
    calls += [("POST", "heartbeat", hb), ("GET", "config", None)]
    calls += [("POST", path, json.loads(body)) for path, body in incidents]
    port, reporter = _reporter_sends(calls)

    head = fa.head_of("127.0.0.1", port, NODE)
    mine = [fa.request("POST", "metrics", head, fa.metrics_template(t + i) % (pps, pps * 700, conn))
            for i, (pps, conn) in enumerate(values)]
    mine += [fa.request("POST", "heartbeat", head, fa.encode(hb)), fa.request("GET", "config", head, None)]
    mine += [fa.request("POST", path, head, body) for path, body in incidents]
    assert len(reporter) == len(mine) == 8
    for theirs, ours in zip(reporter, mine, strict=True):
        assert ours == theirs


def test_answers_are_read_as_sent() -> None:
    """The generator's answer parser: status, body and `Connection: close`, split anywhere."""
    answer = (b"HTTP/1.1 201 Created\r\nServer: nginx\r\nContent-Type: application/json\r\ncontent-length: 13\r\n"
              b"Connection: close\r\n\r\n{\"uuid\":\"ab\"}")
    assert fa.parse_answer(answer[:30]) is None
    status, at, length, close = fa.parse_answer(answer)  # type: ignore[misc]
    assert (status, answer[at:at + length], close) == (201, b'{"uuid":"ab"}', True)
    assert fa.parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")[3] is False  # type: ignore[index]
    with pytest.raises(ValueError):
        fa.parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


def _nodes(store: Any, n: int) -> list[dict[str, str]]:
    nodes = []
    with store.group():
        for i in range(n):
            key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
            store.add_node(f"fleet-{i}", node_uuid, auth.hash_secret(key), time.time())
            nodes.append({"Authorization": f"Bearer {key}", "X-Node-UUID": node_uuid})
    return nodes


def test_generator_against_the_real_server(tmp_path: Path) -> None:
    """Run as the benchmark runs it: 12 agents, a third with an incident, 4 s: every request answered 2xx,
    every agent's samples stored under its own node, and the incidents opened and resolved."""
    from floodwatch.server.sqlite_store import SQLiteStore

    store = SQLiteStore(tmp_path / "server.db")
    nodes = _nodes(store, 12)
    store.close()
    srv = ServerProc(tmp_path, ["--max-connections-per-address", "100"]).start()
    try:
        spec = {"host": "127.0.0.1", "port": srv.port, "nodes": nodes, "start": time.time() + 3.0, "warmup": 0.0,
                "duration": 4.0, "seed": 3, "heartbeat_interval": 2.0, "config_interval": 2.0,
                "incident_share": 0.34}
        out = subprocess.run([PYTHON, str(REPO / "benchmarks" / "fleet_agents.py")], input=json.dumps(spec),
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res["errors"] == {}, (res["errors"], srv.log()[-2000:])
        store = srv.open_store()
        try:
            per_node = dict(store.execute("SELECT node_id, COUNT(*) FROM metrics GROUP BY node_id").fetchall())
            heartbeats = store.execute("SELECT COUNT(*) FROM nodes WHERE agent_version IS NOT NULL").fetchone()[0]
            incidents = store.execute("SELECT status, COUNT(*) FROM incidents GROUP BY status").fetchall()
        finally:
            store.close()
    finally:
        srv.stop()
    # 4 ticks each (3 s for the generator to start first); two ticks that a slow machine ran within one
    # second carry the same recorded_at and are stored once (exactly-once metrics)
    assert len(per_node) == 12 and all(1 <= n <= 4 for n in per_node.values()), per_node
    assert heartbeats == 12
    assert dict(incidents).get("resolved", 0) >= 1 and "active" not in dict(incidents), incidents
    assert res["requests"] >= 12 * 4 + 12 + 12
