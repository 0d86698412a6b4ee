"""The dashboard's state and reads on both backends (a real SQLite file, a real PostgreSQL database):
sessions and sign-in failures are in the database, so a second store on the same database (another
replica, or the server after a restart) knows them; the pages' queries and /metrics' overview answer the
same on both; the live updates' NOTIFY payloads stay under PostgreSQL's limit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from floodwatch.server import prom, rollup
from floodwatch.server.web import live, sessions, users
from floodwatch.server.web import queries as q

T0 = 1_764_410_400.0  # on an hour boundary
Opener = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on one fresh database; every store it opened is closed afterwards."""
    opened: list[Any] = []
    if request.param == "sqlite":
        from floodwatch.server.sqlite_store import SQLiteStore

        def open_store() -> Any:
            opened.append(SQLiteStore(tmp_path / "server.db"))
            return opened[-1]
    else:
        from floodwatch.server.pg_store import PGStore

        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.new_database()

        def open_store() -> Any:
            opened.append(PGStore(url, cluster.password))
            return opened[-1]
    yield open_store
    for store in opened:
        store.close()


def test_a_session_made_by_one_store_is_known_to_another_until_it_expires(opener: Opener) -> None:
    a, b = opener(), opener()
    users.add_user(a, "olga", "operator", T0)
    token, made = sessions.create(a, "olga", "operator", T0)
    assert made.role == "operator" and len(token) >= 43
    seen = sessions.get(b, token, T0 + 10)  # the other replica, or the server after a restart
    assert seen is not None and (seen.user, seen.role, seen.csrf) == ("olga", "operator", made.csrf)
    assert sessions.csrf_ok(seen, made.csrf) and not sessions.csrf_ok(seen, made.csrf[:-1] + "x")
    assert token not in json.dumps([list(r) for r in a.execute("SELECT * FROM dash_sessions").fetchall()])
    # use keeps it alive (its last use written at most once a minute); idleness ends it, everywhere
    assert sessions.get(a, token, T0 + sessions.IDLE_SECONDS - 1) is not None
    assert sessions.get(b, token, T0 + 2 * sessions.IDLE_SECONDS - 2) is not None
    assert sessions.get(b, token, T0 + 3 * sessions.IDLE_SECONDS) is None
    assert a.execute("SELECT count(*) FROM dash_sessions").fetchone()[0] == 0
    assert sessions.get(a, "x" * 200, T0) is None and sessions.get(a, None, T0) is None


def test_signing_out_and_deleting_the_user_end_its_sessions_on_every_store(opener: Opener) -> None:
    a, b = opener(), opener()
    users.add_user(a, "vic", "viewer", T0)
    first, _ = sessions.create(a, "vic", "viewer", T0)
    second, _ = sessions.create(b, "vic", "viewer", T0)
    sessions.drop(b, first)
    assert sessions.get(a, first, T0 + 1) is None and sessions.get(a, second, T0 + 1) is not None
    assert users.delete_user(b, "vic")
    assert sessions.get(a, second, T0 + 2) is None


def test_sessions_are_bounded_the_least_recently_used_go(opener: Opener) -> None:
    store = opener()
    users.add_user(store, "ann", "viewer", T0)
    tokens = [sessions.create(store, "ann", "viewer", T0 + i, max_sessions=3)[0] for i in range(5)]
    assert [sessions.get(store, t, T0 + 10) is not None for t in tokens] == [False, False, True, True, True]


def test_sign_in_failures_count_across_stores_within_the_window(opener: Opener) -> None:
    a, b = opener(), opener()
    for i in range(sessions.LOGIN_FAILURES):
        assert sessions.login_wait(a if i % 2 else b, "192.0.2.7", "rita", T0 + i) == 0.0
        sessions.login_failed(a if i % 2 else b, "192.0.2.7", "rita", T0 + i)
    wait = sessions.login_wait(b, "192.0.2.7", "someone", T0 + 5)  # the address is limited...
    assert wait == pytest.approx(sessions.LOGIN_WINDOW - 5)
    assert sessions.login_wait(a, "198.51.100.1", "rita", T0 + 5) > 0  # ...and the user name, from anywhere
    assert sessions.login_wait(a, "198.51.100.1", "other", T0 + 5) == 0.0
    assert sessions.login_wait(a, "192.0.2.7", "rita", T0 + sessions.LOGIN_WINDOW + 0.5) == 0.0
    assert sessions.prune(a, T0 + sessions.LOGIN_WINDOW + 10) == 2 * sessions.LOGIN_FAILURES
    assert a.execute("SELECT count(*) FROM dash_login_failures").fetchone()[0] == 0


def test_a_second_first_start_finds_the_admin_made_by_the_first(opener: Opener, tmp_path: Path) -> None:
    a, b = opener(), opener()
    assert users.ensure_admin(a, tmp_path / "pw-a", T0)
    assert not users.ensure_admin(b, tmp_path / "pw-b", T0)
    admin = users.find_user(b, "admin")
    assert admin is not None and users.check_password((tmp_path / "pw-a").read_text().strip(), admin["pw_hash"])
    assert not (tmp_path / "pw-b").exists()


def _fleet(store: Any) -> dict[str, int]:
    ids = {}
    for name in ("edge-a", "edge-b", "Core_1"):
        ids[name] = store.add_node(name, f"uuid-{name.lower()}", "h", T0)["node_id"]
    store.record_heartbeat(ids["edge-a"], {"agent_version": "1"}, T0 + 100)
    store.record_heartbeat(ids["edge-b"], {"agent_version": "1"}, T0)
    samples = [{"recorded_at": T0 + i, "pps": 100 + i, "bps": 8000, "tcp_pct": 50.0, "udp_pct": 25.0}
               for i in range(120)]
    store.add_metrics(ids["edge-a"], samples, T0 + 120)
    for key, family, status in (("k1", "udp_flood", "active"), ("k2", "syn_flood", "active"),
                                ("k3", "udp_flood", "resolved")):
        store.upsert_incident(ids["edge-b"], {"incident_key": key, "attack_family": family, "severity": "high",
                                              "status": status, "started_at": T0 + 10, "peak_pps": 9000}, T0 + 11)
    store.queue_command(ids["edge-a"], "status", T0 + 1)
    store.queue_command(ids["edge-b"], "iptables -I INPUT -s 192.0.2.1 -j DROP", T0 + 12)
    return ids


def test_the_pages_reads_answer_the_same_on_both_backends(opener: Opener) -> None:
    store = opener()
    ids = _fleet(store)
    now = T0 + 121
    f = q.fleet(store, now, 90.0)
    assert (f["total"], f["online"], f["attacked"], f["more"]) == (3, 1, 1, False)
    assert [(n["name"], n["active_incidents"]) for n in f["nodes"]] == [("edge-b", 2), ("Core_1", 0), ("edge-a", 0)]
    edge_a = f["nodes"][2]
    assert (edge_a["pps"], edge_a["status"], edge_a["spark"]) == (219, "online", [129.5, 189.5])
    assert [n["name"] for n in q.fleet(store, now, 90.0, search="core_")["nodes"]] == ["Core_1"]  # no case, _ literal
    assert q.fleet(store, now, 90.0, search="%")["nodes"] == []
    assert [n["name"] for n in q.fleet(store, now, 90.0, page=1, per_page=2)["nodes"]] == ["edge-a"]

    page = q.node_page(store, "edge-b", now, 90.0)
    assert page is not None and [i["incident_key"] for i in page["recent_incidents"]] == ["k3", "k2", "k1"]
    series = q.node_series(store, ids["edge-a"], 86400.0, now)  # one-minute rollups
    assert series["step"] == 60 and [p[:3] for p in series["points"]] == [[T0, 129.5, 159], [T0 + 60, 189.5, 219]]
    assert json.dumps(series)  # JSON-ready on both (no Decimal)
    assert len(q.node_series(store, ids["edge-a"], 3600.0, now)["points"]) == 120  # raw samples
    shaded = q.node_series(store, ids["edge-b"], 3600.0, now)["incidents"]
    assert sorted(i["family"] for i in shaded) == ["syn_flood", "udp_flood", "udp_flood"]

    by = {k: [i["incident_key"] for i in q.incidents(store, {k: v})] for k, v in (
        ("status", "active"), ("family", "udp_flood"), ("node_id", ids["edge-a"]), ("since", T0 + 11),
        ("before", 3))}
    assert by == {"status": ["k2", "k1"], "family": ["k3", "k1"], "node_id": [], "since": [], "before": ["k2", "k1"]}
    inc = q.incident_page(store, 1)
    assert inc is not None and inc["node_id"] == ids["edge-b"] and [c["id"] for c in inc["commands"]] == [2]
    assert [c["node_name"] for c in q.commands(store, None)] == ["edge-b", "edge-a"]
    assert [c["status"] for c in q.commands(store, ids["edge-a"])] == ["queued"]
    assert q.node_names(store) == ["Core_1", "edge-a", "edge-b"]

    over = prom.fleet_overview(store, now, 90.0, 10)
    assert over["nodes"] == {"online": 1, "offline": 1, "new": 1}
    assert over["families"] == [("syn_flood", 1), ("udp_flood", 1)]
    assert [(r["name"], r["pps"]) for r in over["node_rows"]] == [("edge-a", 219), ("edge-b", None)]
    assert rollup.prune(store, T0 + rollup.ROLLUP_1M_DAYS * 86400 + 3600) == 2  # the two 1-minute rows


def test_live_payloads_carry_incidents_only_stay_under_postgresqls_limit_and_read_back() -> None:
    samples_of = [("metrics", {"node_id": n, "recorded_at": T0 + k, "pps": 10**12, "bps": 10**15})
                  for n in range(1, 2001) for k in (1, 0)]  # a batch from 2,000 nodes, twice each
    assert live.encode(samples_of) == []  # a commit of samples only NOTIFYs nothing (replicas poll them)
    events: list[tuple[str, dict[str, Any]]] = [("incident", {"incident_id": i, "created": True})
                                                for i in range(10**9, 10**9 + 2000)]
    payloads = live.encode(events + samples_of)
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    incidents, samples = [], []
    for p in payloads:
        i, s = live.decode(p)
        incidents += i
        samples += s
    assert incidents == list(range(10**9, 10**9 + 2000)) and samples == []
    # a replica of the version before still NOTIFYs samples (during a rolling upgrade): still read
    assert live.decode(f'[["i",7],["m",3,{T0},10,20]]') == ([7], [(3, T0, 10, 20)])
    for bad in ('{"i": 1}', '[["x", 1]]', '[["m", 1, 2, "3", 4]]', "not json"):
        with pytest.raises(ValueError):
            live.decode(bad)
