"""Hostile request bodies against the real server (a subprocess): each gets a clear, counted 400, never a
500, and what was stored before the limits existed is still listed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fwserver_util import Backend, Node, Reply, ServerProc, admin_headers, incident_body, running

DEEP = "[" * 973 + "]" * 973


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProc]:
    with running(tmp_path_factory.mktemp("hard"), "--read-timeout", "2", backend=backend) as s:
        yield s


@pytest.fixture(scope="module")
def node(srv: ServerProc) -> Node:
    return srv.add_node()


@pytest.fixture(scope="module")
def admin(srv: ServerProc) -> dict[str, str]:
    return admin_headers(srv)


def strict_json(raw: bytes) -> Any:
    """JSON as other languages read it: Infinity and NaN are not JSON."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in an answer: not JSON")
    return json.loads(raw, parse_constant=refuse)


def counters(srv: ServerProc, admin: dict[str, str]) -> dict[str, int]:
    r = srv.request("GET", "/api/v1/admin/health", headers=admin)
    assert r.status == 200, r.raw
    return dict(r.json["counters"])


def post_raw(srv: ServerProc, path: str, text: str, node: Node | None = None,
             headers: dict[str, str] | None = None) -> Reply:
    """`text` is JSON as written on the wire (it may hold what json.dumps cannot write: 1e400)."""
    h = {"Content-Type": "application/json", **(headers or {})}
    return srv.request("POST", path, node=node, raw=text.encode("utf-8", "surrogatepass"), headers=h)


def with_value(body: dict[str, Any], key: str, raw_value: str) -> str:
    """`body` as JSON text with `key` set to `raw_value` verbatim."""
    return json.dumps({**body, key: "@@V@@"}).replace('"@@V@@"', raw_value)


def assert_400(r: Reply, field: str, reason: str = "") -> None:
    assert r.status == 400, (r.status, r.raw[:300])
    message = strict_json(r.raw)["error"]
    assert message.startswith(field) and reason in message, message


# -- depth and size --------------------------------------------------------------------------------


def test_deep_nesting_is_refused_naming_the_field_and_stores_nothing(srv: ServerProc, node: Node,
                                                                     admin: dict[str, str]) -> None:
    key = "deep-973"
    r = post_raw(srv, "incident", with_value(incident_body(key), "ioc_matches", DEEP), node)
    assert r.status == 400 and "nested deeper than 32 levels" in strict_json(r.raw)["error"], r.raw[:200]
    # (named ioc_matches[0]... when it parses; near Python's recursion limit it may not parse at all: body)
    r = post_raw(srv, "incident", with_value(incident_body(key), "vectors", '[{"a": ' + "[" * 40 + "]" * 40 + "}]"),
                 node)
    assert_400(r, "vectors[0].a", "nested deeper than 32 levels")
    r = post_raw(srv, "incident", with_value(incident_body(key), "ioc_matches", "[" * 200_000 + "]" * 200_000), node)
    assert_400(r, "body", "nested deeper than 32 levels")  # too deep to even parse
    listed = srv.request("GET", "/api/v1/admin/incidents", headers=admin)
    assert listed.status == 200 and key not in [i["incident_key"] for i in strict_json(listed.raw)]
    fine = incident_body("nested-ok", ioc_matches=[{"pattern": {"a": [[[1]]]}}])
    assert srv.post("incident", fine, node).status == 201


@pytest.mark.parametrize(("path", "text", "field"), [
    ("incident", with_value(incident_body(), "ioc_matches", json.dumps([[0] * 1001])), "ioc_matches[0]"),
    ("incident", with_value(incident_body(), "vectors", json.dumps([{str(i): i for i in range(1001)}])),
     "vectors[0]"),
    ("incident", with_value(incident_body(), "ioc_matches", json.dumps(["x" * 16385])), "ioc_matches[0]"),
    ("heartbeat", json.dumps({"agent_version": "1", "extra": {"k" * 16385: 1}}), "extra (a key)"),
    ("metrics", json.dumps([{"pps": 1, "bps": 1, "x": 2**64 + 1}]), "[0].x"),
])
def test_oversized_values_anywhere_are_refused(srv: ServerProc, node: Node, path: str, text: str,
                                               field: str) -> None:
    assert_400(post_raw(srv, path, text, node), field)


def test_the_admin_list_survives_data_stored_before_the_limits(srv: ServerProc, node: Node,
                                                               admin: dict[str, str]) -> None:
    """An older server stored these; the list and the incident still answer, with the bad field withheld."""
    store = srv.open_store()
    try:
        node_id = store.find_node(node.uuid)["node_id"]  # type: ignore[index]
        inc = {"incident_key": "legacy-deep", "attack_family": "udp_flood", "severity": "high"}
        incident_id, _ = store.upsert_incident(node_id, inc, time.time())
        details = '{"ioc_matches": ' + DEEP + ', "geo_breakdown": {"US": Infinity}, "target_ips": ["198.18.0.1"]}'
        store.execute("UPDATE incidents SET details = ? WHERE id = ?", (details, incident_id))
        store.execute("UPDATE incident_history SET body = ? WHERE incident_id = ?", (details, incident_id))
    finally:
        store.close()
    listed = srv.request("GET", "/api/v1/admin/incidents", headers=admin)
    assert listed.status == 200, listed.raw[:300]
    legacy = next(i for i in strict_json(listed.raw) if i["incident_key"] == "legacy-deep")
    assert legacy["ioc_matches"] is None and legacy["geo_breakdown"] is None
    assert legacy["target_ips"] == ["198.18.0.1"]
    assert "nested deeper" in legacy["withheld"]["ioc_matches"] and "finite" in legacy["withheld"]["geo_breakdown"]
    one = srv.request("GET", f"/api/v1/admin/incidents/{incident_id}", headers=admin)
    assert one.status == 200 and strict_json(one.raw)["history"][0]["withheld"]
    update = srv.post("incident", {"incident_id": incident_id, "peak_pps": 5, "ioc_matches": ["ok"]}, node)
    assert update.status == 200, update.raw
    shown = strict_json(srv.request("GET", f"/api/v1/admin/incidents/{incident_id}", headers=admin).raw)
    assert shown["ioc_matches"] == ["ok"] and shown["peak_pps"] == 5 and shown["target_ips"] == ["198.18.0.1"]
    assert "withheld" not in shown  # an update keeps the readable fields and drops what JSON cannot carry


# -- text, time and numbers --------------------------------------------------------------------------

SURROGATE = '"\\ud800"'


@pytest.mark.parametrize(("path", "text", "field"), [
    ("heartbeat", with_value({}, "agent_version", SURROGATE), "agent_version"),
    ("heartbeat", with_value({}, "os", '"ok \\udfff"'), "os"),
    ("incident", with_value(incident_body(), "incident_key", SURROGATE), "incident_key"),
    ("incident", with_value(incident_body(), "target_ips", f"[{SURROGATE}]"), "target_ips[0]"),
    ("incident", with_value(incident_body(), "geo_breakdown", '{"\\ud800": 1}'), "geo_breakdown (a key)"),
    ("metrics", "[" + with_value({"pps": 1, "bps": 1}, "recorded_at", SURROGATE) + "]", "[0].recorded_at"),
    ("commands/ack", with_value({"command_id": 1, "status": "failed"}, "error", SURROGATE), "error"),
])
def test_a_lone_surrogate_in_any_string_is_400(srv: ServerProc, node: Node, path: str, text: str,
                                               field: str) -> None:
    assert_400(post_raw(srv, path, text, node), field, "lone surrogate")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("metrics", {"pps": 1, "bps": 1, "recorded_at": "9999-12-31T23:59:59-01:00"}, "recorded_at"),
    ("metrics", [{"pps": 1, "bps": 1, "recorded_at": "0001-01-01T00:00:00+01:00"}], "[0].recorded_at"),
    ("incident", incident_body(started_at="9999-12-31T23:30:00-14:00"), "started_at"),
    ("incident", incident_body(status="resolved", ended_at="0001-01-01T00:59:59+01:00"), "ended_at"),
    ("commands/ack", {"command_id": 1, "status": "applied", "executed_at": "9999-12-31T23:59:59.999-00:01"},
     "executed_at"),
])
def test_a_timestamp_that_overflows_is_400(srv: ServerProc, node: Node, path: str, body: Any, field: str) -> None:
    assert_400(srv.post(path, body, node), field, "out of range")


@pytest.mark.parametrize(("path", "text", "field"), [
    ("metrics", '{"pps": 1e400, "bps": 1}', "pps"),
    ("metrics", '{"pps": 1, "bps": 1, "tcp_pct": -1e400}', "tcp_pct"),
    ("incident", with_value(incident_body(), "ioc_matches", "[1e400]"), "ioc_matches[0]"),
    ("incident", with_value(incident_body(), "protocol_breakdown", '{"udp": 1e999}'), "protocol_breakdown.udp"),
    ("heartbeat", '{"uptime": 1, "x": [0.5, 2e308]}', "x[1]"),
])
def test_non_finite_numbers_are_400(srv: ServerProc, node: Node, path: str, text: str, field: str) -> None:
    assert_400(post_raw(srv, path, text, node), field, "not a finite number")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_400(srv: ServerProc, node: Node, literal: str) -> None:
    r = post_raw(srv, "incident", with_value(incident_body(), "ioc_matches", f"[{literal}]"), node)
    assert_400(r, "body", "not valid JSON")


def test_every_kind_of_unparsable_body_is_a_counted_400(srv: ServerProc, node: Node, admin: dict[str, str]) -> None:
    bodies = [b"", b"   ", b"{", b'{"pps": 1,}', b"\xff\xfe{}", b'{"a": "\xed\xa0\x80"}', b"[" * 100_000,
              b'{"pps": ' + b"9" * 5000 + b"}", b"\x00", b'"just a string"', b"null", b"nan"]
    before = counters(srv, admin)
    for raw in bodies:
        r = srv.request("POST", "metrics", node=node, raw=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400, (raw[:40], r.status, r.raw[:200])
        assert strict_json(r.raw)["error"]
    after = counters(srv, admin)
    assert after["bad_requests"] - before["bad_requests"] == len(bodies)
    assert after["errors_5xx"] == before["errors_5xx"]


def test_admin_routes_refuse_surrogates_in_paths_and_queries(srv: ServerProc, admin: dict[str, str]) -> None:
    for path in ("/api/v1/admin/nodes/%ED%A0%80", "/api/v1/admin/incidents?node=%ED%A0%80",
                 "/api/v1/admin/nodes/%ED%A0%80/metrics", "/api/v1/admin/incidents?limit=%ED%A0%80"):
        r = srv.request("GET", path, headers=admin)
        assert 400 <= r.status < 500, (path, r.status, r.raw[:200])
        assert strict_json(r.raw)["error"]
    r = post_raw(srv, "/api/v1/admin/nodes", with_value({}, "name", SURROGATE), headers=admin)
    assert_400(r, "name", "lone surrogate")


def test_a_malformed_request_line_gets_a_json_400_and_is_counted(srv: ServerProc, admin: dict[str, str]) -> None:
    before = counters(srv, admin)
    for head in (b"GARBAGE\r\n\r\n", b"GET /api/v1/health HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
                 b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(head)
            answer = read_all(s)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1].startswith(b"4"), answer[:200]
        assert "error" in strict_json(rest.partition(b"\r\n\r\n")[2]), answer[:300]
    after = counters(srv, admin)
    assert after["bad_requests"] - before["bad_requests"] == 3 and after["errors_5xx"] == before["errors_5xx"]


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's timeout bounds the wait)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out
