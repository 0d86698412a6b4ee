"""Hundreds of mutated requests to every route of the real server (a subprocess): never a 5xx, every
answer is strict JSON, and the valid data sent between them is all stored. Seeded: the same requests
every run."""

from __future__ import annotations

import http.client
import json
import random
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fwserver_util import Backend, Node, Reply, ServerProc, admin_headers, incident_body, multipart, running

ROUNDS = 40  # mutations per route and round trip of valid data
HOSTILE = ["1e400", "-1e400", "NaN", "Infinity", '"\\ud800"', '"a\\udfff"', "[" * 973 + "]" * 973,
           "[" * 40 + "]" * 40, '{"a":' * 40 + "1" + "}" * 40, "18446744073709551617", "-9223372036854775809",
           "9" * 5000, json.dumps("x" * 20000), "true", "null", "{}", "[]", '""', '"   "',
           '"9999-12-31T23:59:59-01:00"', '"0001-01-01T00:00:00+01:00"', '"2026-02-30T00:00:00Z"', "-1", "0",
           "1.5", "[1, 2]", '{"\\ud800": 1}', json.dumps(["x"] * 1001), '"\\u0000"', '"<script>"']
HOSTILE_QUERY = ["%ED%A0%80", "%FF", "%C2%B2", "%D9%A3", "-1", "0", "99999999999999999999", "9999-12-31T23:59:59-01:00",
                 "x" * 5000, "1e400", "", "%00", "active", "2026-11-28T10:00:00Z", "%2e%2e%2f"]


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the value itself included)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths_of(v, (*prefix, i))
    return out


def put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = put(value[path[0]], path[1:], new)
    return copy


def mutate(rng: random.Random, body: Any) -> bytes:
    """A hostile value at a random place, a new hostile field, or damaged bytes."""
    kind = rng.randrange(5)
    if kind <= 1:
        text = json.dumps(put(body, rng.choice(paths_of(body)), "@@V@@"))
        return text.replace('"@@V@@"', rng.choice(HOSTILE)).encode()
    if kind == 2 and isinstance(body, dict):
        return json.dumps({**body, "extra": "@@V@@"}).replace('"@@V@@"', rng.choice(HOSTILE)).encode()
    raw = bytearray(json.dumps(body).encode())
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(raw) + 1)
        op = rng.randrange(3)
        if op == 0 and at < len(raw):
            raw[at] = rng.randrange(256)
        elif op == 1:
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del raw[at:]
    return bytes(raw)


def strict(r: Reply, what: str) -> Any:
    assert r.status < 500, f"{what}: {r.status} {r.raw[:300]!r}"

    def refuse(name: str) -> Any:
        raise AssertionError(f"{what}: {name} in the answer")
    data = json.loads(r.raw, parse_constant=refuse)
    if r.status >= 400:
        assert isinstance(data.get("error"), str) and data["error"], (what, r.raw[:300])
    return data


def test_mutated_requests_to_every_route_never_fail_the_server_or_lose_data(tmp_path: Path,
                                                                          fresh_backend: Backend) -> None:
    rng = random.Random(20261130)
    with running(tmp_path, "--read-timeout", "2", backend=fresh_backend) as srv:
        node = srv.add_node("fuzz-node")
        admin = admin_headers(srv)
        first = srv.post("incident", incident_body("fuzz-base"), node)
        incident_id = strict(first, "base incident")["incident_id"]
        command_id = strict(srv.post(f"/api/v1/admin/nodes/{node.uuid}/commands",
                                     {"command": "iptables -I INPUT -s 198.51.100.7 -j DROP"}, headers=admin),
                            "queue")["command_id"]
        partc_key = strict(srv.post("incidents", PARTC_OPEN, node), "part C open")["uuid"]
        routes = json_routes(srv, node, admin, incident_id, command_id) | partc_routes(srv, node, partc_key)
        sent = 0
        partc_keys: list[str] = []
        for round_no in range(ROUNDS):
            for name, (send, body) in routes.items():
                strict(send(mutate(rng, body)), f"{name} #{round_no}")
                sent += 1
            sent += fuzz_queries(srv, admin, node, rng, round_no) + fuzz_upload(srv, node, rng, incident_id, round_no)
            sent += fuzz_chunk(srv, node, rng, partc_key, round_no)
            stored = srv.post("metrics", [{"pps": 10_000 + round_no, "bps": 1}], node)
            assert strict(stored, "valid metrics") == {"accepted": 1}
            assert srv.post("incident", incident_body(f"fuzz-valid-{round_no}"), node).status == 201
            opened = srv.post("incidents", {**PARTC_OPEN, "started_at": f"2026-11-28T11:{round_no:02d}:00Z"}, node)
            partc_keys.append(strict(opened, "valid part C open")["uuid"])
        assert sent >= 400
        metrics = strict(srv.request("GET", f"/api/v1/admin/nodes/{node.uuid}/metrics?limit=100000",
                                     headers=admin), "metrics")
        assert set(range(10_000, 10_000 + ROUNDS)) <= {m["pps"] for m in metrics}
        keys = {i["incident_key"] for i in strict(srv.request("GET", "/api/v1/admin/incidents", headers=admin),
                                                  "incidents")}
        assert {f"fuzz-valid-{i}" for i in range(ROUNDS)} | {"fuzz-base", *partc_keys} <= keys
        strict(srv.request("GET", "config", node=node), "config")
        strict(srv.request("GET", f"/api/v1/admin/nodes/{node.uuid}/commands", headers=admin), "commands")
        counters = strict(srv.request("GET", "/api/v1/admin/health", headers=admin), "health")["counters"]
        assert counters["errors_5xx"] == 0 and counters["bad_requests"] >= sent // 2


def json_routes(srv: ServerProc, node: Node, admin: dict[str, str], incident_id: int,
                command_id: int) -> dict[str, tuple[Callable[[bytes], Reply], Any]]:
    """Every route that takes a JSON body: how to send raw bytes to it, and a valid body to mutate."""
    def agent(method: str, path: str) -> Callable[[bytes], Reply]:
        return lambda raw: srv.request(method, path, node=node, raw=raw, headers={"Content-Type": "application/json"})

    def operator(method: str, path: str) -> Callable[[bytes], Reply]:
        return lambda raw: srv.request(method, f"/api/v1/admin/{path}", raw=raw,
                                       headers={**admin, "Content-Type": "application/json"})
    return {
        "heartbeat": (agent("POST", "heartbeat"), {"agent_version": "1.0", "uptime": 5, "os": "Linux"}),
        "metrics": (agent("POST", "metrics"), [{"pps": 1, "bps": 2, "tcp_pct": 50.0, "udp_pct": 1,
                                                "recorded_at": "2026-11-28T10:00:00Z", "conn_count": 3}]),
        "incident open": (agent("POST", "incident"), incident_body("fuzz-open", vectors=[{"family": "udp"}])),
        "incident update": (agent("POST", "incident"), {"incident_id": incident_id, "status": "resolved",
                                                        "ended_at": "2026-11-28T10:05:00Z", "peak_pps": 9}),
        "ack": (agent("POST", "commands/ack"), {"command_id": command_id, "status": "applied", "output": "ok",
                                                "executed_at": "2026-11-28T10:00:01Z"}),
        "pcap as json": (agent("POST", "pcap"), {"incident_id": incident_id}),
        "config with a body": (agent("GET", "config"), {"x": 1}),
        "admin add node": (operator("POST", "nodes"), {"name": "fuzz-extra"}),
        "admin config": (operator("PUT", f"nodes/{node.uuid}/config"),
                         {"pps_threshold": 1000, "baseline": {"pps": 10.0},
                          "ioc_patterns": [{"pattern": "x", "name": "y"}, "plain"]}),
        "admin command": (operator("POST", f"nodes/{node.uuid}/commands"), {"command": {"argv": ["ipset", "add"]}}),
    }


PARTC_OPEN = {"started_at": "2026-11-28T10:00:00Z", "attack_family": "udp_flood", "peak_pps": 5000.5,
              "peak_bps": 1e6, "ioc_hits": ["memcached"], "source_ip_count": 3,
              "top_src_ips": [{"ip": "198.18.0.9", "count": 5}]}


def partc_routes(srv: ServerProc, node: Node, key: str) -> dict[str, tuple[Callable[[bytes], Reply], Any]]:
    """The official agent's dialect (part C): the same, with its bodies."""
    def post(path: str) -> Callable[[bytes], Reply]:
        return lambda raw: srv.request("POST", path, node=node, raw=raw,
                                       headers={"Content-Type": "application/json", "User-Agent": "ftagent/1.9.65"})
    return {
        "part C open": (post("incidents"), PARTC_OPEN),
        "part C update": (post(f"incidents/{key}"), {"peak_pps": 7000.2, "top_dst_ports": [{"port": 53, "count": 1}]}),
        "part C resolve": (post(f"incidents/{key}/resolve"), {"duration_seconds": 30, "source_ip_count": 0}),
        "part C unsupported": (post("gre-tunnels"), {"tunnels": []}),
    }


def fuzz_chunk(srv: ServerProc, node: Node, rng: random.Random, key: str, round_no: int) -> int:
    """A part C chunked capture upload with hostile chunk headers."""
    values = ["0", "1", "\u00b2", "\u0663", "-1", "99999999999999999999", "", "x"]
    headers = {"Content-Type": "application/octet-stream", "X-Upload-Id": rng.choice(["up-1", "", "a" * 100, "../x"]),
               "X-Chunk-Index": rng.choice(values).encode().decode("unicode_escape"),
               "X-Chunk-Total": rng.choice(values).encode().decode("unicode_escape")}
    r = srv.request("POST", f"incidents/{key}/pcap", node=node, raw=bytes(rng.randrange(256) for _ in range(64)),
                    headers={k: v.encode().decode("latin-1") for k, v in headers.items()})
    strict(r, f"chunk {headers} #{round_no}")
    return 1


def fuzz_queries(srv: ServerProc, admin: dict[str, str], node: Node, rng: random.Random, round_no: int) -> int:
    """The admin GET routes with hostile path parts and query values."""
    v = rng.choice(HOSTILE_QUERY)
    q = urllib.parse.quote(v, safe="%")
    for path in (f"incidents?node={q}&status={q}&limit={q}", f"nodes/{node.uuid}/metrics?since={q}&limit={q}",
                 f"nodes/{q}", f"incidents/{q}", f"incidents/{q}/pcap", f"nodes/{q}/commands"):
        strict(srv.request("GET", f"/api/v1/admin/{path}", headers=admin), f"GET {path} #{round_no}")
    return 6


def fuzz_upload(srv: ServerProc, node: Node, rng: random.Random, incident_id: int, round_no: int) -> int:
    """A pcap upload with damaged multipart bytes or a hostile incident_id."""
    ident = rng.choice([str(incident_id), "-1", "99999999999999999999", "\ud800", "1e400", "x" * 100, "\u00b2",
                        "\u0663"])
    body, ctype = multipart([("incident_id", None, ident.encode("utf-8", "surrogatepass")),
                             ("file", "c.pcap", b"\xd4\xc3\xb2\xa1" + bytes(100))])
    raw = bytearray(body)
    if rng.random() < 0.5:
        del raw[rng.randrange(len(raw)):]
    strict(srv.request("POST", "pcap", node=node, raw=bytes(raw), headers={"Content-Type": ctype}),
           f"upload {ident[:20]!r} #{round_no}")
    return 1


def test_hostile_dashboard_requests_signed_in_never_fail_the_server(tmp_path: Path,
                                                                   fresh_backend: Backend) -> None:
    """The web pages and their forms, signed in as the admin (valid session and CSRF token)."""
    rng = random.Random(20261201)
    with running(tmp_path, backend=fresh_backend) as srv:
        node = srv.add_node("web-node")
        incident_id = strict(srv.post("incident", incident_body("web-1"), node), "incident")["incident_id"]
        cookie, token = sign_in(srv)
        headers = {"Cookie": cookie, "X-CSRF-Token": token}
        values = ["\ud800", "\xff", "\u00b2", "-1", "99999999999999999999", "x" * 5000, "\x00", "1e400", "nan",
                  "9999-12-31T23:59:59-01:00", str(incident_id), "web-node"]
        for round_no in range(ROUNDS):
            v = rng.choice(values)
            q = urllib.parse.quote(v.encode("utf-8", "surrogatepass"), safe="")
            for path in (f"/nodes/{q}", f"/incidents?node={q}&status=active&before={q}", f"/incidents/{q}",
                         f"/incidents/{q}/pcap", f"/dash/api/nodes/web-node/series?since={q}&step={q}"):
                r = page(srv, "GET", path, headers=headers)
                assert r.status < 500, (path, r.status, r.raw[:200])
            for path, form in (("/nodes/web-node/threshold", {"pps_threshold": v, "bps_threshold": v}),
                               ("/commands", {"node": "web-node", "commands": v, "incident_id": v, "block_top": v}),
                               ("/users", {"action": "add", "name": v, "role": v})):
                body = urllib.parse.urlencode({k: x.encode("utf-8", "surrogatepass")
                                               for k, x in {**form, "csrf": token}.items()})
                r = page(srv, "POST", path, body.encode(), {
                    **headers, "Content-Type": "application/x-www-form-urlencoded"})
                assert r.status < 500, (path, v[:20], r.status, r.raw[:200])
            preview = {"node": "web-node", "commands": "iptables -I INPUT -s 198.51.100.7 -j DROP",
                       "incident_id": str(incident_id), "block_top": "3"}
            r = page(srv, "POST", "/dash/api/commands/preview", mutate(rng, preview),
                     {**headers, "Content-Type": "application/json"})
            assert r.status < 500, ("preview", r.status, r.raw[:200])
        r = page(srv, "POST", "/nodes/web-node/threshold",
                 urllib.parse.urlencode({"pps_threshold": "4242", "csrf": token}).encode(),
                 {**headers, "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status < 400, r.raw[:200]
        admin = admin_headers(srv)
        shown = strict(srv.request("GET", "/api/v1/admin/nodes/web-node", headers=admin), "node")
        assert shown["config"]["pps_threshold"] == 4242
        counters = strict(srv.request("GET", "/api/v1/admin/health", headers=admin), "health")["counters"]
        assert counters["errors_5xx"] == 0


def sign_in(srv: ServerProc) -> tuple[str, str]:
    """The admin's session cookie and CSRF token, as a browser gets them."""
    password = (srv.tmp / "dashboard-admin-password").read_text().strip()
    body = urllib.parse.urlencode({"username": "admin", "password": password}).encode()
    r = page(srv, "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    m = re.search(r"fw_session=([^;]+)", r.headers.get("Set-Cookie", ""))
    assert m, (r.status, r.headers)
    cookie = f"fw_session={m.group(1)}"
    html = page(srv, "GET", "/", headers={"Cookie": cookie}).raw.decode()
    token = re.search(r'data-csrf="([^"]+)"', html)
    assert token, "no CSRF token on the page"
    return cookie, token.group(1)


def page(srv: ServerProc, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    """A request to the dashboard (outside /api/), without following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()
