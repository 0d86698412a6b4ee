"""One contract, two backends: the same store tests on SQLite and on a real PostgreSQL (a throwaway
cluster), so neither drifts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from floodwatch.errors import StorageError
from floodwatch.server import auth, migrations
from floodwatch.server.dbthread import DbWorker
from floodwatch.server.store import Conflict, NotFound
from floodwatch.server.validate import BadField, iso_from_epoch
from tests.pgcluster import PgCluster

T0 = 1_764_410_400.0


@pytest.fixture
def store(any_store: Any) -> Any:
    """Both stores (tests/server/conftest.py)."""
    return any_store


def _node(store: Any, name: str = "edge-a") -> int:
    return int(store.add_node(name, auth.new_node_uuid(), auth.hash_secret(auth.new_api_key()), T0)["node_id"])


def _inc(key: str | None, **over: Any) -> dict[str, Any]:
    return {"incident_key": key, "status": "active", "attack_family": "udp_flood", "severity": "high",
            "started_at": T0, "peak_pps": 1000, "spoofing_detected": True, "top_src_ips": [{"ip": "198.18.0.9"}],
            **over}


def test_schema_is_at_the_current_version(store: Any) -> None:
    assert store.schema_before == 0 and [m.version for m in store.migrated] == [1, 2, 3, 4]
    assert migrations.CURRENT == 4


def test_nodes_heartbeats_and_names(store: Any) -> None:
    a = _node(store)
    with pytest.raises(Conflict):
        _node(store)
    store.record_heartbeat(a, {"agent_version": "1.2", "os": "linux"}, T0 + 10)
    store.record_heartbeat(a, {"uptime": 5}, T0 + 20)
    n = store.find_node("edge-a", now=T0 + 30)
    assert (n["node_id"], n["status"], n["agent_version"], n["os"], n["uptime"]) == (a, "online", "1.2", "linux", 5)
    assert store.find_node(str(a))["name"] == "edge-a" and store.find_node("nobody") is None
    assert [x["status"] for x in store.list_nodes(T0 + 500, 90)] == ["offline"]
    uuid = n["node_uuid"]
    assert store.node_auth(uuid)[0] == a and store.node_auth("00000000-0000-4000-8000-000000000000") is None


def test_metrics_keep_each_sample_and_fill_the_rollups(store: Any) -> None:
    a = _node(store)
    assert store.add_metrics(a, [{"recorded_at": T0 + i, "pps": 10 * i, "bps": 80} for i in range(90)], T0 + 90) == 90
    got = store.metrics(a, T0 + 60, 1000)
    assert len(got) == 30 and got[0]["pps"] == 600 and got[0]["recorded_at"] == "2025-11-29T10:01:00.000Z"
    with store.group():
        rows = [(r[0], r[1], r[2]) for r in _rows(store, "SELECT t, n, pps_max FROM metrics_1m ORDER BY t")]
    assert rows == [(int(T0), 60, 590), (int(T0) + 60, 30, 890)]
    assert store.prune_metrics(T0 + 60) == 60 and len(store.metrics(a, 0, 1000)) == 30


def _rows(store: Any, sql: str) -> list[Any]:
    if hasattr(store, "pool"):
        with store._tx() as cur:
            return [tuple(r.values()) for r in cur.execute(sql).fetchall()]
    return [tuple(r) for r in store.execute(sql).fetchall()]


def test_incident_keys_are_idempotent_per_node_and_updates_never_reopen(store: Any) -> None:
    a, b = _node(store), _node(store, "edge-b")
    first, created = store.upsert_incident(a, _inc("k1"), T0)
    assert created and store.upsert_incident(a, _inc("k1", peak_pps=5), T0 + 1) == (first, False)
    other, created = store.upsert_incident(b, _inc("k1"), T0)  # the same key on another node: its own
    assert created and other != first
    assert store.upsert_incident(a, {"incident_id": first, "status": "resolved", "ended_at": T0 + 60},
                                 T0 + 60) == (first, False)
    store.upsert_incident(a, {"incident_id": first, "status": "active", "peak_pps": 9}, T0 + 61)
    inc = store.incident(first)
    assert inc["status"] == "resolved" and inc["peak_pps"] == 9 and inc["updates"] == 2
    assert inc["spoofing_detected"] is True and inc["top_src_ips"] == [{"ip": "198.18.0.9"}]
    assert [h["kind"] for h in inc["history"]] == ["open", "resolve", "update"]
    assert inc["ended_at"] == "2025-11-29T10:01:00.000Z" and inc["node_name"] == "edge-a"
    with pytest.raises(Conflict):
        store.upsert_incident(a, {"incident_id": first, "incident_key": "other"}, T0)
    with pytest.raises(NotFound):
        store.upsert_incident(b, {"incident_id": first}, T0)  # another node's incident
    assert store.incident_by_key(a, "k1") == (first, T0) and store.incident_node(other) == b
    assert [i["incident_id"] for i in store.list_incidents()] == [other, first]
    assert [i["incident_id"] for i in store.list_incidents(node_id=a, status="resolved")] == [first]
    assert store.list_incidents(status="active", node_id=a) == []


def test_acked_commands_are_never_pending_again(store: Any) -> None:
    a, b = _node(store), _node(store, "edge-b")
    c1, c2 = store.queue_command(a, {"action": "block"}, T0), store.queue_command(a, "status", T0)
    assert [c["id"] for c in store.pending_commands(a, T0 + 1)] == [c1, c2]
    assert store.ack_command(a, {"command_id": c1, "status": "success", "error": None, "output": "ok"}, T0 + 2)
    assert not store.ack_command(a, {"command_id": c1, "status": "failed", "error": "x", "output": None}, T0 + 3)
    with pytest.raises(NotFound):
        store.ack_command(b, {"command_id": c2, "status": "success", "error": None, "output": None}, T0)
    assert [c["id"] for c in store.pending_commands(a, T0 + 4)] == [c2]
    listed = store.list_commands(a)
    assert [(c["status"], c["output"], c["command"]) for c in listed] == [("success", "ok", {"action": "block"}),
                                                                          ("pending", None, "status")]
    assert listed[1]["delivered_at"] == "2025-11-29T10:00:01.000Z"


def test_remote_config_pcaps_and_admin_tokens(store: Any) -> None:
    a = _node(store)
    store.update_node_config(a, {"pps_threshold": 5000, "ioc_patterns": ["x"], "ignored": 1})
    assert store.node_config(a) == {"node_id": a, "pps_threshold": 5000, "bps_threshold": None, "baseline": {},
                                    "ioc_patterns": ["x"]}
    with pytest.raises(NotFound):
        store.update_node_config(a + 100, {"pps_threshold": 1})
    inc, _ = store.upsert_incident(a, _inc("p"), T0)
    assert store.set_pcap(inc, a, "one.pcap", 100, "ab" * 32, T0) is None
    assert store.set_pcap(inc, a, "two.pcap", 250, "cd" * 32, T0 + 1) == "one.pcap"
    assert store.pcap(inc)["file_name"] == "two.pcap" and store.pcap_bytes_total() == 250
    assert store.incident(inc, history=False)["pcap_bytes"] == 250
    store.add_admin_token("ops", "h1", T0)
    with pytest.raises(Conflict):
        store.add_admin_token("ops2", "h1", T0)
    assert store.admin_token_hashes() == ["h1"]
    assert store.check() == []


def test_removing_a_node_deletes_it_and_what_it_sent_only(store: Any) -> None:
    a, b = _node(store), _node(store, "edge-b")
    uuid_a = store.find_node("edge-a")["node_uuid"]
    for n in (a, b):
        store.add_metrics(n, [{"recorded_at": T0 + i, "pps": 10, "bps": 80} for i in range(3)], T0 + 3)
        inc, _ = store.upsert_incident(n, _inc("k"), T0)
        store.upsert_incident(n, {"incident_id": inc, "peak_pps": 5}, T0 + 1)
        store.set_pcap(inc, n, f"{n}.pcap", 100, "ab" * 32, T0)
        store.queue_command(n, "status", T0)
    assert store.remove_node(a) == {"incidents": 1, "metrics": 3, "commands": 1, "pcap_files": [f"{a}.pcap"]}
    assert store.node_auth(uuid_a) is None and store.find_node("edge-a") is None
    assert store.list_incidents(node_id=a) == [] and store.metrics(a, 0, 100) == []
    with store.group():
        left = _rows(store, "SELECT DISTINCT node_id FROM metrics_1m UNION SELECT node_id FROM node_latest")
    assert [r[0] for r in left] == [b]
    assert len(store.list_incidents(node_id=b)) == 1 and len(store.metrics(b, 0, 100)) == 3  # the other kept
    assert store.pcap_bytes_total() == 100 and store.check() == []
    assert store.remove_node(a) is None
    _node(store)  # the name is free again


def test_a_failing_call_in_a_group_is_rolled_back_alone(store: Any) -> None:
    a = _node(store)
    with store.group():
        store.queue_command(a, "one", T0)
        with pytest.raises(Conflict):
            _node(store)  # duplicate name
        store.queue_command(a, "two", T0)
    assert [c["command"] for c in store.list_commands(a)] == ["one", "two"]


def test_a_newer_schema_is_refused_on_both(store: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with store.group():
        store.add_admin_token("x", "h", T0)
        if hasattr(store, "pool"):
            with store._tx() as cur:
                cur.execute("INSERT INTO schema_migrations VALUES (7, 'future', 0)")
        else:
            store.execute("INSERT INTO schema_migrations VALUES (7, 'future', 0)")
    with pytest.raises(migrations.SchemaTooNew, match="version 7, newer than this floodwatch knows"):
        if hasattr(store, "pool"):
            from floodwatch.server.pg_store import PGStore

            cluster: PgCluster = request.getfixturevalue("pg_cluster")
            PGStore(store.where, cluster.password)
        else:
            type(store)(store.path)
    assert store.admin_token_hashes() == ["h"]  # refused, nothing changed


def test_postgresql_password_stays_out_of_messages(pg_cluster: PgCluster) -> None:
    from floodwatch.errors import StorageError
    from floodwatch.server.backend import redact
    from floodwatch.server.pg_store import PGStore

    url = pg_cluster.new_database()
    wrong = "wrong-" + pg_cluster.password
    with pytest.raises(StorageError) as e:
        PGStore(url, wrong, min_size=1)
    assert "password authentication failed" in str(e.value), e.value
    assert wrong not in str(e.value) and pg_cluster.password not in str(e.value)
    assert redact("postgresql://fw:s3cret@db:5432/x") == "postgresql://fw@db:5432/x"


def test_rollups_past_their_retention_are_pruned_on_both(store: Any) -> None:
    from floodwatch.server import rollup

    node = _node(store)
    old = T0 - (rollup.ROLLUP_1M_DAYS + 1) * 86400  # a minute bucket past its 30 days; its hour still kept
    store.add_metrics(node, [{"recorded_at": old, "pps": 5, "bps": 40}, {"recorded_at": T0, "pps": 7, "bps": 56}],
                      T0)
    with store.group():
        assert rollup.prune(store, T0) == 1
    minutes = [int(r[0]) for r in store.execute("SELECT t FROM metrics_1m ORDER BY t").fetchall()]
    hours = [int(r["t"]) for r in store.execute("SELECT t FROM metrics_1h ORDER BY t").fetchall()]
    assert minutes == [int(T0) // 60 * 60] and len(hours) == 2


def test_backend_neutral_sql_reads_the_same_rows_on_both(store: Any) -> None:
    node = _node(store)
    store.queue_command(node, "50% off?", T0)  # a literal % and ? in a value, not in the SQL
    rows = store.execute("SELECT id, command FROM commands WHERE node_id = ? AND command LIKE ?",
                         (node, "%off%")).fetchall()
    assert [(r[1], r["command"]) for r in rows] == [('"50% off?"', '"50% off?"')]
    assert dict(store.execute("SELECT command, node_id FROM commands").fetchall()) == {'"50% off?"': node}
    assert store.execute("DELETE FROM commands WHERE node_id = ?", (node,)).rowcount == 1
    assert store.execute("SELECT 1 FROM commands").fetchone() is None


def _metric_calls(a: int, b: int) -> list[tuple[int, list[dict[str, Any]], float]]:
    """Calls as a batch brings them: one node twice (one bucket shared, one new), samples out of order,
    a sample on a minute's edge, percentages, an empty call, retried samples (stored once) and two samples
    the server stamped at the same arrival (no time of their own: both stored)."""
    stamped = {"recorded_at": T0 + 62, "pps": 1, "bps": 10, "stamped": True}
    return [(a, [{"recorded_at": T0 + 59, "pps": 7, "bps": 70, "tcp_pct": 12.5, "conn_count": 3},
                 {"recorded_at": T0 + 3, "pps": 900, "bps": 10, "udp_pct": 80.25}], T0 + 60),
            (b, [{"recorded_at": T0 + 30, "pps": 5, "bps": 50, "icmp_pct": 0.5}], T0 + 60),
            (a, [{"recorded_at": T0 + 60, "pps": 11, "bps": 110, "tcp_pct": 50.0},
                 {"recorded_at": T0 + 20, "pps": 2, "bps": 20}], T0 + 61),
            (b, [], T0 + 61),
            (b, [{"recorded_at": T0 + 30, "pps": 5, "bps": 50, "icmp_pct": 0.5},
                 {"recorded_at": T0 + 31, "pps": 6, "bps": 60}], T0 + 62),
            (a, [{"recorded_at": T0 + 3, "pps": 900, "bps": 10, "udp_pct": 80.25}, stamped, dict(stamped)], T0 + 62)]


def _stored(store: Any, node: int) -> dict[str, list[Any]]:
    """What a node's samples left in each table (without row ids and node ids)."""
    cols = "recorded_at, received_at, pps, bps, tcp_pct, udp_pct, icmp_pct, conn_count"
    out = {"metrics": f"SELECT {cols} FROM metrics WHERE node_id = {node} ORDER BY recorded_at, pps",
           "metrics_1m": f"SELECT * FROM metrics_1m WHERE node_id = {node} ORDER BY t",
           "metrics_1h": f"SELECT * FROM metrics_1h WHERE node_id = {node} ORDER BY t",
           "node_latest": f"SELECT * FROM node_latest WHERE node_id = {node}"}
    with store.group():
        return {k: [tuple(float(v) if v is not None else None for v in r) for r in _rows(store, sql)]
                for k, sql in out.items()}


def test_metrics_added_as_one_batch_store_what_the_calls_one_by_one_store(store: Any) -> None:
    one_a, one_b, many_a, many_b = (_node(store, n) for n in ("one-a", "one-b", "many-a", "many-b"))
    events: list[Any] = []
    store.listeners.append(events.extend)
    with store.group():
        counts = [store.add_metrics(n, samples, now) for n, samples, now in _metric_calls(one_a, one_b)]
    one_events, events[:] = list(events), []
    with store.group():
        assert store.add_metrics_many(_metric_calls(many_a, many_b)) == counts == [2, 1, 2, 0, 1, 2]
    ids = {one_a: many_a, one_b: many_b}
    assert events == [(k, {**e, "node_id": ids[e["node_id"]]}) for k, e in one_events]
    for one, many in ids.items():
        per_call, batched = _stored(store, one), _stored(store, many)
        assert batched["metrics"] == per_call["metrics"] and len(batched["metrics"]) == (6 if one == one_a else 2)
        for table in ("metrics_1m", "metrics_1h", "node_latest"):
            assert [r[1:] for r in batched[table]] == [r[1:] for r in per_call[table]], table
    assert [r[1:] for r in _stored(store, many_a)["metrics_1m"]] == [
        (T0, 3.0, 909.0, 900.0, 100.0, 70.0, 12.5, 80.25, 0.0),
        (T0 + 60, 3.0, 13.0, 11.0, 130.0, 110.0, 50.0, 0.0, 0.0)]
    assert _stored(store, many_b)["node_latest"] == [(float(many_b), T0 + 31, 6.0, 60.0)]
    assert _stored(store, many_a)["node_latest"] == [(float(many_a), T0 + 62, 1.0, 10.0)]


def _one_batch(store: Any, calls: list[tuple[Any, ...]]) -> tuple[list[Any], dict[str, int]]:
    """Store calls [(method, *args)] through a real DbWorker, queued before its thread starts so that it takes
    them as one batch: each call's result (or exception) and the worker's counters."""
    worker = DbWorker(store, max_batch=len(calls))

    async def go() -> list[Any]:
        tasks = [asyncio.ensure_future(worker.call(fn, *args)) for fn, *args in calls]
        await asyncio.sleep(0)  # one turn of the loop: every call is queued
        worker.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(go()), worker.stats
    finally:
        worker.stop()


def _sample(t: float, pps: int = 1) -> list[dict[str, Any]]:
    return [{"recorded_at": t, "pps": pps, "bps": 1}]


def test_the_database_thread_stores_a_batch_of_metrics_in_one_call_and_a_bad_call_fails_alone(store: Any) -> None:
    """PostgreSQL tries a batch optimistically (its combined writes without savepoints): the bad call fails it,
    the batch is rolled back and runs again with a savepoint per call: every good call stored once."""
    a, b = _node(store, "a"), _node(store, "b")
    no_such_node = 999_999
    calls: list[tuple[Any, ...]] = [(store.add_metrics, node, _sample(T0 + i, i), T0 + i) for i in range(40)
                                    for node in (a, b)]
    calls += [(store.add_metrics, no_such_node, _sample(T0), T0), (store.add_metrics, a, _sample(T0 + 100), T0 + 100)]
    calls += [(store.record_heartbeat, node, {"agent_version": f"v-{node}"}, T0 + 101) for node in (a, b)]
    results, stats = _one_batch(store, calls)
    assert results[:80] == [1] * 80 and results[81] == 1 and results[82:] == [None, None]
    assert isinstance(results[80], StorageError)
    assert len(store.metrics(a, 0, 1000)) == 41 and len(store.metrics(b, 0, 1000)) == 40
    assert _rows(store, f"SELECT sum(n) AS n FROM metrics_1m WHERE node_id = {a}") == [(41,)]  # counted once
    assert {n["agent_version"] for n in store.list_nodes(T0 + 101, 90)} == {f"v-{a}", f"v-{b}"}
    assert stats["db_commits"] == 1 and stats["db_metrics_fallbacks"] == 1
    assert stats["db_metrics_coalesced"] == 0  # the combined call failed: the calls ran one by one
    assert stats["db_retries"] == (1 if store.dialect == "postgresql" else 0)


def test_the_database_thread_commits_a_good_batch_at_the_first_attempt(store: Any) -> None:
    a, b = _node(store, "a"), _node(store, "b")
    calls: list[tuple[Any, ...]] = [(store.add_metrics, node, _sample(T0 + i, i), T0 + i) for i in range(10)
                                    for node in (a, b)]
    calls += [(store.record_heartbeat, node, {"os": "linux"}, T0 + 11) for node in (a, b)]
    results, stats = _one_batch(store, calls)
    assert results == [1] * 20 + [None, None]
    assert stats["db_retries"] == 0 and stats["db_metrics_coalesced"] == 20 and stats["db_heartbeat_coalesced"] == 2
    assert _rows(store, "SELECT node_id, sum(n) AS n FROM metrics_1m GROUP BY node_id ORDER BY node_id") == [
        (a, 10), (b, 10)]


def test_the_database_thread_coalesces_a_batch_of_metrics_calls(store: Any) -> None:
    a = _node(store)
    calls = [(store.add_metrics, a, _sample(T0 + i, i), T0 + i) for i in range(50)]
    results, stats = _one_batch(store, [*calls, (store.node_config, a)])
    assert results[:50] == [1] * 50 and results[50]["node_id"] == a
    assert stats["db_commits"] == 1 and stats["db_metrics_coalesced"] == 50
    assert [m["pps"] for m in store.metrics(a, 0, 1000)] == list(range(50))


def test_a_sample_sent_again_is_stored_once_and_counted_once_in_the_rollups(store: Any) -> None:
    """Exactly once: a sample is known by its node and its agent's recorded_at. Repeated in a later call, in a
    later batch or within one batch, it is neither stored again nor counted again in the rollups."""
    a = _node(store)
    first = [{"recorded_at": T0 + 1, "pps": 100, "bps": 800, "tcp_pct": 10.0}, {"recorded_at": T0 + 2, "pps": 200,
                                                                              "bps": 1600}]
    assert store.add_metrics(a, first, T0 + 2) == 2
    assert store.add_metrics(a, [dict(s) for s in first], T0 + 9) == 0  # the agent's retry: a later call
    new = {"recorded_at": T0 + 3, "pps": 300, "bps": 2400}
    with store.group():  # a later batch holding a stored sample, and a new one twice
        assert store.add_metrics_many([(a, [dict(first[1]), new], T0 + 10), (a, [dict(new)], T0 + 10),
                                       (a, [dict(first[0])], T0 + 11)]) == [1, 0, 0]
    assert store.add_metrics_many([(a, [dict(new), dict(new)], T0 + 12)]) == [0]
    stored = [(m["recorded_at"], m["pps"], m["received_at"]) for m in store.metrics(a, 0, 100)]
    assert stored == [(iso_from_epoch(T0 + 1), 100, iso_from_epoch(T0 + 2)),  # the first copy, as it arrived
                      (iso_from_epoch(T0 + 2), 200, iso_from_epoch(T0 + 2)),
                      (iso_from_epoch(T0 + 3), 300, iso_from_epoch(T0 + 10))]
    for table in ("metrics_1m", "metrics_1h"):
        assert _rows(store, f"SELECT n, pps_sum, pps_max, bps_sum, tcp_sum FROM {table} WHERE node_id = {a}") == [
            (3, 600, 300, 4800, 10.0)], table
    assert _rows(store, f"SELECT recorded_at, pps FROM node_latest WHERE node_id = {a}") == [(T0 + 3, 300)]


def test_the_database_thread_answers_every_copy_of_a_retried_sample_and_stores_it_once(store: Any) -> None:
    a, b = _node(store, "a"), _node(store, "b")
    calls = [(store.add_metrics, node, _sample(T0 + i, i), T0 + 50) for i in range(20) for node in (a, b)]
    retried = [(store.add_metrics, a, _sample(T0 + i, i), T0 + 51) for i in range(10, 30)]
    results, stats = _one_batch(store, calls + retried)
    assert results == [1] * 40 + [0] * 10 + [1] * 10  # each caller answered; the copies stored nothing
    assert stats["db_metrics_coalesced"] == 60 and stats["db_metrics_fallbacks"] == 0
    assert [m["pps"] for m in store.metrics(a, 0, 1000)] == list(range(30))
    assert _rows(store, f"SELECT sum(n) AS n, sum(pps_sum) AS pps FROM metrics_1m WHERE node_id = {a}") == [
        (30, sum(range(30)))]


def test_the_database_thread_looks_up_a_batch_of_credentials_at_once_each_caller_its_own_answer(store: Any) -> None:
    nodes = {name: store.add_node(name, auth.new_node_uuid(), auth.hash_secret(name), T0) for name in ("a", "b", "c")}
    gone = nodes["c"]
    store.remove_node(gone["node_id"])
    unknown = auth.new_node_uuid()
    asked = [nodes["a"], nodes["b"], gone, {"node_uuid": unknown}, nodes["a"], nodes["b"]]
    calls = [(store.node_auth, n["node_uuid"]) for n in asked]
    results, stats = _one_batch(store, [*calls, (store.node_config, nodes["a"]["node_id"])])
    a, b = (nodes[x]["node_id"] for x in "ab")
    assert results[:6] == [(a, auth.hash_secret("a")), (b, auth.hash_secret("b")), None, None,
                           (a, auth.hash_secret("a")), (b, auth.hash_secret("b"))]
    assert results[6]["node_id"] == a
    assert stats["db_commits"] == 1 and stats["db_auth_coalesced"] == 6 and stats["db_auth_fallbacks"] == 0


def test_the_database_thread_stores_a_batch_of_heartbeats_at_once_and_a_bad_one_fails_alone(store: Any) -> None:
    a, b, c = _node(store, "a"), _node(store, "b"), _node(store, "c")
    calls = [(store.record_heartbeat, a, {"agent_version": "1.0", "os": "linux"}, T0 + 1),
             (store.record_heartbeat, b, {"uptime": 7}, T0 + 2),
             (store.record_heartbeat, a, {"uptime": 9}, T0 + 3),  # a's fields so far stay, the time moves on
             (store.record_heartbeat, a, {"agent_version": "1.1"}, T0 + 4)]
    results, stats = _one_batch(store, calls)
    assert results == [None] * 4 and stats["db_heartbeat_coalesced"] == 4 and stats["db_heartbeat_fallbacks"] == 0
    got = {n["node_id"]: n for n in store.list_nodes(T0 + 10, 90)}
    assert (got[a]["agent_version"], got[a]["os"], got[a]["uptime"]) == ("1.1", "linux", 9)
    assert (got[b]["uptime"], got[b]["agent_version"], got[c]["status"]) == (7, None, "new")
    # a was last seen at T0 + 4 (its last heartbeat): online 90 s later, offline just after
    assert store.find_node("a", now=T0 + 94)["status"] == "online"
    assert store.find_node("a", now=T0 + 94.5)["status"] == "offline"
    bad = (store.record_heartbeat, c, {"uptime": 2**70}, T0 + 5)  # too big for the column: refused by the database
    results, stats = _one_batch(store, [(store.record_heartbeat, b, {"os": "bsd"}, T0 + 6), bad,
                                        (store.record_heartbeat, c, {"os": "hurd"}, T0 + 7)])
    assert results[0] is None and results[2] is None and isinstance(results[1], Exception)
    assert stats["db_heartbeat_fallbacks"] == 1 and stats["db_commits"] == 1
    b_now, c_now = store.find_node("b"), store.find_node("c")
    assert (b_now["os"], c_now["os"], c_now["uptime"]) == ("bsd", "hurd", None)


def test_postgresql_a_read_failing_in_a_group_rolls_the_group_back(pg_cluster: PgCluster) -> None:
    """The per-agent reads skip the savepoint on PostgreSQL: one that fails aborts the transaction, so nothing
    in the group may be reported stored. Other reads keep theirs: one failing costs its caller only."""
    from floodwatch.server.pg_store import PGStore

    store = PGStore(pg_cluster.new_database(), password=pg_cluster.password)
    try:
        a = _node(store)
        with pytest.raises(StorageError, match="rolled back"), store.group():
            store.queue_command(a, "lost", T0)
            with pytest.raises(StorageError, match="no_such_table"):
                store._one("SELECT * FROM no_such_table", bare=True)
        assert store.list_commands(a) == [] and store.pending_commands(a, T0) == []
        with store.group():
            store.queue_command(a, "one", T0)
            with pytest.raises(BadField):
                store.find_node("edge\x00a")  # text from a request: with a savepoint
        assert [c["command"] for c in store.list_commands(a)] == ["one"]
        store.queue_command(a, "kept", T0)
        assert [c["command"] for c in store.pending_commands(a, T0)] == ["one", "kept"]
        assert all(c["delivered_at"] is not None for c in store.list_commands(a))
    finally:
        store.close()


def test_the_database_thread_reads_a_batch_of_configs_and_pending_commands_at_once(store: Any) -> None:
    a, b = _node(store, "a"), _node(store, "b")
    store.update_node_config(a, {"pps_threshold": 5000})
    cid = store.queue_command(b, "iptables -I INPUT -s 198.18.0.7 -j DROP", T0)
    calls = [(store.node_config, a), (store.node_config, b), (store.pending_commands, a, T0 + 1),
             (store.pending_commands, b, T0 + 1), (store.pending_commands, b, T0 + 2)]
    results, stats = _one_batch(store, calls)
    assert [r["node_id"] for r in results[:2]] == [a, b] and results[0]["pps_threshold"] == 5000
    assert results[2] == [] and [c["id"] for c in results[3]] == [c["id"] for c in results[4]] == [cid]
    assert stats["db_config_coalesced"] == 2 and stats["db_commands_coalesced"] == 3 and stats["db_commits"] == 1
    (cmd,) = store.list_commands(b)
    assert cmd["delivered_at"] is not None and cmd["status"] == "pending"  # delivered once, at the first call
    results, stats = _one_batch(store, [(store.node_config, a), (store.node_config, 999_999), (store.node_config, b)])
    assert results[0]["node_id"] == a and isinstance(results[1], NotFound) and results[2]["node_id"] == b
    assert stats["db_config_fallbacks"] == 1


def test_postgresql_two_database_threads_a_slow_transaction_holds_up_no_other_call(pg_cluster: PgCluster) -> None:
    """On PostgreSQL the server runs two database threads on one store, each batch its own transaction on its
    own connection: an agent's call is stored and answered while another batch is still busy (here one
    waiting in the database)."""
    from floodwatch.server.pg_store import PGStore

    store = PGStore(pg_cluster.new_database(), password=pg_cluster.password)
    watch = PGStore(pg_cluster.new_database(), password=pg_cluster.password)  # sees the server's sessions
    worker = DbWorker(store, threads=2)

    def sleeping() -> bool:
        row = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                            "AND query LIKE 'SELECT pg_sleep(%'").fetchone()
        return row is not None and int(row[0]) == 1

    async def go() -> tuple[bool, int]:
        a = await worker.call(_node, store, "edge-a")
        slow = asyncio.ensure_future(worker.call(store.execute, "SELECT pg_sleep(3)"))
        deadline = asyncio.get_running_loop().time() + 10
        while not await asyncio.to_thread(sleeping):
            assert asyncio.get_running_loop().time() < deadline, "the slow batch never started"
            await asyncio.sleep(0.02)
        stored = await asyncio.wait_for(worker.call(store.add_metrics, a, _sample(T0 + 5, 7), T0 + 5), 10)
        overtaken = not slow.done()  # answered while the other batch was still in the database
        await slow
        return overtaken, stored

    worker.start()
    try:
        overtaken, stored = asyncio.run(go())
        assert overtaken and stored == 1
        row = store.execute("SELECT count(*) FROM metrics").fetchone()
        assert row is not None and int(row[0]) == 1
    finally:
        worker.stop()
        store.close()
        watch.close()
