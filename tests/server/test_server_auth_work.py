"""An unknown node UUID and a known one with a wrong key cost the server the same work, counted (not
timed): the same key hash, database lookup and constant-time compare. The server runs in this process,
on a real socket, so its calls can be counted; benchmarks/server_auth_timing.py has the timing figures."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fwserver_util import Backend

from floodwatch.server import auth
from floodwatch.server.app import ApiServer
from floodwatch.server.pg_store import PGStore
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.settings.apiserver import ApiserverSettings


def test_unknown_and_known_nodes_do_the_same_verification_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fresh_backend: Backend) -> None:
    calls: Counter[str] = Counter()

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(auth, "hash_secret", counted("hash", auth.hash_secret))
    monkeypatch.setattr(hmac, "compare_digest", counted("compare_digest", hmac.compare_digest))
    for store in (SQLiteStore, PGStore):
        monkeypatch.setattr(store, "node_auth", counted("db_lookup", store.node_auth))
    settings = ApiserverSettings(listen="127.0.0.1:0", database=fresh_backend.url,
                                 database_password_file=fresh_backend.password_file)
    results = asyncio.run(_attempts(settings, tmp_path, calls))
    one_miss = {"hash": 1, "db_lookup": 1, "compare_digest": 1}
    assert results["unknown uuid"] == [(401, one_miss)] * 3
    assert results["known uuid, wrong key"] == [(401, one_miss)] * 3
    assert results["no key"] == [(401, one_miss)] * 3
    assert results["malformed uuid"] == [(401, one_miss)] * 3
    assert results["right key"][0] == (200, one_miss)  # the first success does the same work too
    assert results["right key"][1:] == [(200, {"hash": 1})] * 2  # then it is cached, behind its key


async def _attempts(settings: ApiserverSettings, tmp: Path,
                    calls: Counter[str]) -> dict[str, list[tuple[int, dict[str, int]]]]:
    server = ApiServer(settings, tmp / "server.db", tmp / "pcaps")
    key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
    server.store.add_node("n1", node_uuid, auth.hash_secret(key), time.time())
    host, port = (await server.start())[0]
    cases = {"unknown uuid": (auth.new_node_uuid(), key), "known uuid, wrong key": (node_uuid, key + "x"),
             "no key": (node_uuid, None), "malformed uuid": ("not-a-uuid", key), "right key": (node_uuid, key)}
    out: dict[str, list[tuple[int, dict[str, int]]]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for name, (uuid, secret) in cases.items():
                out[name] = []
                for _ in range(3):
                    headers = {"X-Node-UUID": uuid, **({"Authorization": f"Bearer {secret}"} if secret else {})}
                    calls.clear()
                    async with session.post(f"http://{host}:{port}/api/v1/agent/heartbeat", json={},
                                            headers=headers) as r:
                        await r.read()
                        out[name].append((r.status, dict(calls)))
    finally:
        await server.stop()
    return out
