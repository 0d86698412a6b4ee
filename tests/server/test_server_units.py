"""Pure logic and storage of the API server, without HTTP: validation, auth, rate limit, and the store
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from floodwatch.server import auth, validate
from floodwatch.server.authcache import AUTH_CACHE_LISTENING_SECONDS, AUTH_CACHE_SECONDS, AuthCache
from floodwatch.server.dbthread import DbWorker
from floodwatch.server.netaddr import parse_listen
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.server.store import Conflict, NotFound
from floodwatch.server.validate import BadField


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_bursts_then_paces_and_says_how_long_to_wait() -> None:
    clock = Clock()
    rl = auth.RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [rl.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.check("a")
    assert wait == pytest.approx(0.5)
    assert auth.retry_after_header(wait) == "1"
    assert rl.check("b") == 0.0  # per node
    clock.t += 0.5
    assert rl.check("a") == 0.0
    assert rl.check("a") > 0
    clock.t += 100
    assert [rl.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to the burst, not beyond
    assert rl.check("a") > 0


def test_rate_limiter_off_and_bounded() -> None:
    assert all(auth.RateLimiter(0, 1).check("a") == 0.0 for _ in range(1000))
    rl = auth.RateLimiter(1.0, 1, clock=Clock(), max_nodes=10)
    for i in range(100):
        rl.check(str(i))
    assert len(rl._buckets) <= 10


def test_secrets_headers_and_uuids() -> None:
    key = auth.new_api_key()
    assert auth.secret_matches_hash(auth.hash_secret(key), auth.hash_secret(key))
    assert not auth.secret_matches_hash(auth.hash_secret(key + "x"), auth.hash_secret(key))
    assert not auth.secret_matches_hash(auth.hash_secret(key), auth.DUMMY_HASH)
    assert auth.bearer("Bearer abc") == "abc" and auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("Basic abc") is None and auth.bearer("Bearer ") is None and auth.bearer(None) is None
    u = auth.new_node_uuid()
    assert auth.canonical_uuid(u.upper()) == u
    assert auth.canonical_uuid(u) == u  # the form agents send, taken as it is
    assert auth.canonical_uuid("{" + u + "}") == u and auth.canonical_uuid(u.replace("-", "")) == u
    assert auth.canonical_uuid(u + "\n") is None and auth.canonical_uuid(u[:-1] + "g") is None
    assert auth.canonical_uuid("nope") is None and auth.canonical_uuid("x" * 100) is None


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8787", "host:", "::1:80", "h:99999"):
        with pytest.raises(ValueError, match="listen"):
            parse_listen(bad)


def test_timestamps_need_a_zone_and_come_back_as_utc() -> None:
    assert validate.parse_time("2026-11-28T10:00:00+02:00").hour == 8
    assert validate.iso_from_epoch(validate.parse_time("2026-11-28T10:00:00.25Z").timestamp()) == \
        "2026-11-28T10:00:00.250Z"
    for bad in ("2026-11-28T10:00:00", "2026-13-01T00:00:00Z", "now", "2026-11-28T10:00:00Z" + " " * 40):
        with pytest.raises(ValueError):
            validate.parse_time(bad)


def test_metrics_without_recorded_at_get_the_arrival_time() -> None:
    stamped = validate.metrics({"pps": 1, "bps": 2}, 123.0, 10)[0]
    assert stamped["recorded_at"] == 123.0 and stamped["stamped"] is True  # never taken for a retry of another
    assert "stamped" not in validate.metrics({"pps": 1, "bps": 2, "recorded_at": "2026-11-28T10:00:00Z"}, 9.0, 10)[0]
    assert validate.metrics([], 1.0, 10) == []


def test_incident_update_needs_no_family_but_an_open_does() -> None:
    assert validate.incident({"incident_id": 3, "peak_pps": 5})["attack_family"] is None
    with pytest.raises(BadField, match="attack_family"):
        validate.incident({"severity": "low"})
    assert validate.incident({"attack_family": "dns_flood", "severity": "low", "extra_field": 1})["status"] is None


def test_node_config_changes() -> None:
    assert validate.node_config({"pps_threshold": None}) == {"pps_threshold": None}
    with pytest.raises(BadField, match="body"):
        validate.node_config({})
    with pytest.raises(BadField, match=r"ioc_patterns\[0\].pattern"):
        validate.node_config({"ioc_patterns": [{"name": "x"}]})


@pytest.fixture
def store(any_store: Any) -> Any:
    """Both stores (tests/server/conftest.py)."""
    return any_store


def _node(store: Any, name: str = "n") -> int:
    return int(store.add_node(name, auth.new_node_uuid(), auth.hash_secret("k"), 1.0)["node_id"])


def test_group_rolls_back_only_the_failing_call(store: Any) -> None:
    nid = _node(store)
    with store.group():
        store.add_metrics(nid, [{"pps": 1, "bps": 1, "recorded_at": 5.0}], 5.0)
        with pytest.raises(Conflict):
            store.add_node("n", "other-uuid", "h", 1.0)  # duplicate name
        with pytest.raises(NotFound):
            store.ack_command(nid, {"command_id": 99, "status": "applied", "error": "", "output": ""}, 1.0)
        store.add_metrics(nid, [{"pps": 2, "bps": 1, "recorded_at": 6.0}], 6.0)
    assert [m["pps"] for m in store.metrics(nid, 0, 10)] == [1, 2]
    assert len(store.list_nodes(10.0, 90.0)) == 1
    assert store.check() == []


def test_upsert_and_history(store: Any) -> None:
    nid = _node(store)
    inc = validate.incident({"incident_key": "k1", "attack_family": "syn_flood", "severity": "low"})
    iid, created = store.upsert_incident(nid, inc, 1.0)
    assert created and store.upsert_incident(nid, inc, 2.0) == (iid, False)
    upd = validate.incident({"incident_id": iid, "status": "resolved", "ended_at": "2026-01-01T00:00:00Z"})
    assert store.upsert_incident(nid, upd, 3.0) == (iid, False)
    shown = store.incident(iid)
    assert shown is not None and shown["status"] == "resolved"
    assert [h["kind"] for h in shown["history"]] == ["open", "resolve"]


def test_metrics_retention(store: Any) -> None:
    nid = _node(store)
    store.add_metrics(nid, [{"pps": i, "bps": 0, "recorded_at": float(i)} for i in range(10)], 10.0)
    assert store.prune_metrics(5.0) == 5
    assert [m["pps"] for m in store.metrics(nid, 0, 100)] == [5, 6, 7, 8, 9]


def test_db_worker_commits_concurrent_calls_and_routes_errors(store: Any) -> None:
    nid = _node(store)
    worker = DbWorker(store, max_batch=16)
    worker.start()

    async def go() -> list[object]:
        calls = [worker.call(store.add_metrics, nid, [{"pps": i, "bps": 0, "recorded_at": 1.0 + i}], 1.0)
                 for i in range(100)]
        calls.append(worker.call(store.ack_command, nid, {"command_id": 5, "status": "applied"}, 1.0))
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        results = asyncio.run(go())
    finally:
        worker.stop()
    assert results[:100] == [1] * 100
    assert isinstance(results[100], NotFound)
    assert len(store.metrics(nid, 0, 1000)) == 100
    assert worker.stats["db_commits"] < worker.stats["db_calls"]  # grouped


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    from floodwatch.errors import StorageError

    with pytest.raises(StorageError, match="no database"):
        SQLiteStore(tmp_path / "absent.db", create=False)


# -- the credentials cache (authcache.py) ---------------------------------------------------------------
def test_a_key_is_kept_5_s_unless_removals_are_heard_then_60_s() -> None:
    clock = Clock()
    cache = AuthCache(clock)
    cache.put("u1", "h1", 7, cache.generation)
    assert cache.get("u1", "h1") == 7 and cache.get("u1", "other key") is None and cache.get("u2", "h1") is None
    clock.t += AUTH_CACHE_SECONDS
    assert cache.get("u1", "h1") is None
    cache.listening(True)
    cache.put("u1", "h1", 7, cache.generation)
    clock.t += AUTH_CACHE_LISTENING_SECONDS - 0.1
    assert cache.get("u1", "h1") == 7
    clock.t += 0.1
    assert cache.get("u1", "h1") is None


def test_listening_or_not_starts_from_an_empty_cache() -> None:
    """Removals made while nobody listened are not replayed; entries made while listening would outlive
    the short bound once the notifications stop."""
    cache = AuthCache(Clock())
    cache.put("u1", "h1", 7, cache.generation)
    cache.listening(True)
    assert cache.get("u1", "h1") is None
    cache.put("u1", "h1", 7, cache.generation)
    cache.listening(False)
    assert cache.get("u1", "h1") is None and len(cache) == 0


def test_a_removed_node_is_forgotten_under_every_key_and_a_lookup_that_raced_the_removal_is_not_kept() -> None:
    cache = AuthCache(Clock())
    cache.put("u1", "h1", 7, cache.generation)
    cache.put("u1", "h2", 7, cache.generation)
    cache.put("u2", "h3", 8, cache.generation)
    before = cache.generation  # a lookup of node 7 starts: its row is read before the removal commits
    cache.forget(7)
    assert cache.get("u1", "h1") is None and cache.get("u1", "h2") is None and cache.get("u2", "h3") == 8
    cache.put("u1", "h1", 7, before)  # its answer arrives after the notification
    assert cache.get("u1", "h1") is None


def test_the_cache_is_bounded_the_oldest_entries_go_first() -> None:
    cache = AuthCache(Clock(), max_entries=3)
    for i in range(5):
        cache.put(f"u{i}", "h", i, cache.generation)
    assert len(cache) == 3 and cache.get("u0", "h") is None and cache.get("u1", "h") is None
    assert [cache.get(f"u{i}", "h") for i in (2, 3, 4)] == [2, 3, 4]


@pytest.mark.parametrize("raw", [
    b'{"pps": 1, "bps": 2.5, "recorded_at": "2026-12-01T00:00:00.000Z"}', b"[1, 2]", b'"\\ud800"',
    b"18446744073709551616", b"1e999", b"NaN", b"[Infinity]", b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}",
    '{"x": "é"}'.encode("utf-16"), '{"x": 1}'.encode("utf-32-le"), b'{"x": "\xff"}', b"{", b"{} {}", b"\t[]\r\n"])
def test_request_bodies_decode_as_json_loads_does(raw: bytes) -> None:
    """The server's JSON decoder (one, made once) answers every body, and fails every body, exactly as
    json.loads with the same option did: the same value, the same error type and message (the 400's text)."""
    from floodwatch.server.http import _loads, _no_constants

    def outcome(f: Any) -> Any:
        try:
            return ("ok", f(raw))
        except (ValueError, RecursionError) as e:
            return (type(e).__name__, str(e))

    ours, theirs = outcome(_loads), outcome(lambda b: json.loads(b, parse_constant=_no_constants))
    assert ours == theirs
    assert ours[0] == "ok" or raw in (b"NaN", b"[Infinity]", b'{"x": "\xff"}', b"{", b"{} {}")
