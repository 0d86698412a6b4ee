"""The dashboard over plain HTTP against the real server process, on SQLite and on PostgreSQL: users and
their hashes, the session cookie, CSRF and roles enforced on the server, login rate limits, escaping,
rollups and chart data."""

from __future__ import annotations

import http.client
import re
import secrets
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floodwatch.server import rollup
from tests.server.dashboard_util import store_of
from tests.server.fwserver_util import Backend, Node, ServerProc, cli, cli_inproc, incident_body


class Browser:
    """Just enough of a browser: one cookie, form posts, optional source address."""

    def __init__(self, srv: ServerProc, source: str = "127.0.0.1") -> None:
        self.srv, self.source, self.cookie = srv, source, ""

    def call(self, method: str, path: str, form: dict[str, str] | None = None, json_body: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30, source_address=(self.source, 0))
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = f"fw_session={self.cookie}"
        body = None
        if form is not None:
            body, h["Content-Type"] = urllib.parse.urlencode(form), "application/x-www-form-urlencoded"
        elif json_body is not None:
            body, h["Content-Type"] = json_body, "application/json"
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode())
        conn.close()
        return out

    def login(self, user: str, password: str) -> tuple[int, dict[str, str], str]:
        status, headers, text = self.call("POST", "/login", {"username": user, "password": password})
        m = re.search(r"fw_session=([^;]+)", headers.get("set-cookie", ""))
        if m:
            self.cookie = m.group(1)
        return status, headers, text

    def csrf(self) -> str:
        m = re.search(r'data-csrf="([^"]+)"', self.call("GET", "/")[2])
        assert m, "no CSRF token on the page"
        return m.group(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        backend: Backend) -> Iterator[tuple[ServerProc, Node, dict[str, str]]]:
    srv = ServerProc(tmp_path_factory.mktemp("dashhttp"), backend=backend).start()
    try:
        node = srv.add_node("edge-1")
        pw = {"admin": (srv.tmp / "dashboard-admin-password").read_text().strip()}
        for user, role in (("olga", "operator"), ("vic", "viewer")):
            pw[user] = cli_inproc("add-user", user, "--role", role, *srv.store_args)["password"]
        yield srv, node, pw
    finally:
        srv.stop()


def test_add_user_prints_a_password_once_and_stores_a_slow_salted_hash(env: Any) -> None:
    srv, _, pw = env
    out = cli("add-user", "carol", "--role", "viewer", *srv.store_args, "--json").stdout
    assert set(__import__("json").loads(out)) == {"name", "password"}
    store = store_of(srv)
    try:
        rows = {r[0]: r[1] for r in store.execute("SELECT name, pw_hash FROM dash_users").fetchall()}
    finally:
        store.close()
    assert all(h.startswith("scrypt$32768$8$1$") for h in rows.values())
    assert pw["olga"] not in rows["olga"] and len(set(rows.values())) == len(rows)  # salted
    again = cli("add-user", "carol", "--role", "viewer", *srv.store_args, check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    mode = stat.S_IMODE((srv.tmp / "dashboard-admin-password").stat().st_mode)
    assert mode == 0o600


def test_pages_need_a_session_and_the_cookie_is_locked_down(env: Any) -> None:
    srv, _, pw = env
    b = Browser(srv)
    status, headers, _ = b.call("GET", "/incidents?status=active")
    assert status == 302 and headers["location"].startswith("/login?next=")
    assert b.call("GET", "/events")[0] == 401
    assert b.call("GET", "/dash/api/nodes/1/series?range=1h")[0] == 401
    status, headers, _ = b.login("vic", pw["vic"])
    assert status == 302
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain HTTP here
    status, headers, page = b.call("GET", "/")
    assert status == 200 and "edge-1" in page
    assert "script-src 'self'" in headers["content-security-policy"]


def test_csrf_and_roles_are_enforced_by_the_server(env: Any) -> None:
    srv, node, pw = env
    op = Browser(srv)
    op.login("olga", pw["olga"])
    assert op.call("POST", "/nodes/1/threshold", {"pps_threshold": "777"})[0] == 403  # no token
    assert op.call("POST", "/nodes/1/threshold", {"pps_threshold": "777", "csrf": "x" * 43})[0] == 403
    assert op.call("POST", "/nodes/1/threshold", {"pps_threshold": "777", "csrf": op.csrf()})[0] == 302
    assert srv.request("GET", "config", node=node).json["pps_threshold"] == 777

    viewer = Browser(srv)
    viewer.login("vic", pw["vic"])
    token = viewer.csrf()
    assert viewer.call("POST", "/nodes/1/threshold", {"pps_threshold": "1", "csrf": token})[0] == 403
    assert viewer.call("POST", "/commands", {"node": "1", "commands": "iptables -I INPUT -s 192.0.2.1 -j DROP",
                                             "csrf": token})[0] == 403
    assert viewer.call("POST", "/dash/api/commands/preview", json_body='{"node": "1", "commands": "x"}',
                       headers={"X-CSRF-Token": token})[0] == 403
    assert viewer.call("GET", "/users")[0] == 403
    assert viewer.call("POST", "/incidents/1/dissect", {"csrf": token})[0] == 403
    assert viewer.call("POST", "/users", {"action": "add", "name": "mallory", "role": "admin", "csrf": token})[0] == 403
    assert srv.request("GET", "config", node=node).json["pps_threshold"] == 777
    assert srv.request("GET", "config", node=node).json["pending_commands"] == []


def test_preview_runs_the_executors_validator(env: Any) -> None:
    srv, node, pw = env
    op = Browser(srv)
    op.login("olga", pw["olga"])
    body = '{"node": "edge-1", "commands": "iptables -I INPUT -s 192.0.2.1 -j DROP\\nrm -rf /"}'
    status, _, text = op.call("POST", "/dash/api/commands/preview", json_body=body,
                              headers={"X-CSRF-Token": op.csrf()})
    results = __import__("json").loads(text)["results"]
    assert status == 200 and results[0]["ok"] and results[0]["argv"][0] == "iptables"
    assert not results[1]["ok"] and results[1]["error"]
    # a request holding a command the validator refuses queues nothing
    form = {"node": "edge-1", "commands": "iptables -I INPUT -s 192.0.2.1 -j DROP\nrm -rf /", "csrf": op.csrf()}
    assert op.call("POST", "/commands", form)[0] == 400
    assert srv.request("GET", "config", node=node).json["pending_commands"] == []


def test_login_attempts_are_limited_per_address_and_per_user(env: Any) -> None:
    srv, _, pw = env
    cli_inproc("add-user", "rita", "--role", "viewer", *srv.store_args)
    attacker = Browser(srv, source="127.0.0.7")
    for _ in range(5):
        assert attacker.login("rita", "wrong")[0] == 401
    assert attacker.login("rita", "wrong")[0] == 429
    assert attacker.login("vic", pw["vic"])[0] == 429  # this address is blocked, whatever the user
    elsewhere = Browser(srv, source="127.0.0.8")
    assert elsewhere.login("rita", "wrong")[0] == 429  # this user is blocked, from any address
    assert elsewhere.login("vic", pw["vic"])[0] == 302


def test_agent_sent_text_is_escaped_in_the_html(env: Any) -> None:
    srv, node, pw = env
    evil = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'
    body = incident_body(attack_subtype=evil[:64], geo_breakdown={evil: 3}, target_ips=[evil],
                         vectors=[{"name": evil}], ioc_matches=[evil])
    incident_id = srv.post("incident", body, node).json["incident_id"]
    b = Browser(srv)
    b.login("vic", pw["vic"])
    for page in (f"/incidents/{incident_id}", "/incidents", "/"):
        status, _, html = b.call("GET", page)
        assert status == 200
        assert "<script>alert" not in html and "<img src=x" not in html, page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in b.call("GET", f"/incidents/{incident_id}")[2]


def test_an_http_floods_paths_agents_site_and_proposals_show_escaped(env: Any) -> None:
    srv, node, pw = env
    evil = '<script>alert(3)</script>'
    body = incident_body(attack_family="http_flood", attack_subtype="login_flood", http_site="shop" + evil,
                         http_top_paths=[{"path": "/wp-login.php", "count": 9000}, {"path": evil, "count": 5},
                                         "junk", {"path": "/x"}],
                         http_top_agents=[{"agent": "python-requests/2.31", "count": 8800}],
                         http_status_mix={"2xx": 10.0, "4xx": 90.0},
                         mitigation_proposals=["iptables -I INPUT -s 198.51.100.7 -j DROP"])
    incident_id = srv.post("incident", body, node).json["incident_id"]
    bad = srv.post("incident", incident_body(attack_family="http_flood", http_top_paths={"not": "a list"},
                                             http_top_agents=[[1, 2]], mitigation_proposals="x"), node)
    b = Browser(srv)
    b.login("vic", pw["vic"])
    status, _, html = b.call("GET", f"/incidents/{incident_id}")
    assert status == 200 and 'id="http-details"' in html
    for shown in ("/wp-login.php", "9000", "python-requests/2.31", "iptables -I INPUT -s 198.51.100.7 -j DROP",
                  "4xx", "&lt;script&gt;alert(3)&lt;/script&gt;"):
        assert shown in html, shown
    assert "<script>alert(3)" not in html
    status, _, html = b.call("GET", f"/incidents/{bad.json['incident_id']}")
    assert status == 200 and 'id="http-details"' in html  # wrong shapes: left out, never an error page


def test_rollups_answer_long_ranges(env: Any) -> None:
    srv, node, pw = env
    now = time.time()
    minute = int(now // 60 * 60) - 600
    samples = [{"pps": 100 * (i + 1), "bps": 1000, "tcp_pct": 50.0, "udp_pct": 50.0, "icmp_pct": 0.0,
                "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute + i))} for i in range(4)]
    assert srv.post("metrics", samples, node).status == 200
    b = Browser(srv)
    b.login("vic", pw["vic"])
    status, _, text = b.call("GET", "/dash/api/nodes/edge-1/series?range=24h")
    data = __import__("json").loads(text)
    assert status == 200 and data["step"] == 60
    point = next(p for p in data["points"] if p[0] == minute)
    assert point[1] == 250.0 and point[2] == 400  # the minute's average and maximum
    assert b.call("GET", "/dash/api/nodes/edge-1/series?range=2y")[0] == 400


def test_buckets_fold_samples_exactly() -> None:
    samples = [{"recorded_at": 120.5, "pps": 10, "bps": 5}, {"recorded_at": 179.0, "pps": 30, "bps": 7},
               {"recorded_at": 180.0, "pps": 1, "bps": 1, "tcp_pct": 100.0}]
    assert sorted(rollup.buckets(7, samples, 60)) == [(7, 120, 2, 40, 30, 12, 7, 0.0, 0.0, 0.0),
                                                      (7, 180, 1, 1, 1, 1, 1, 100.0, 0.0, 0.0)]
    assert rollup.buckets(7, samples, 3600) == [(7, 0, 3, 41, 30, 13, 7, 100.0, 0.0, 0.0)]


def test_unknown_paths_stay_errors(env: Any) -> None:
    srv, _, pw = env
    b = Browser(srv)
    b.login("vic", pw["vic"])
    assert b.call("GET", "/incidents/99999999")[0] == 404
    assert b.call("GET", "/incidents/abc")[0] == 404
    assert b.call("GET", "/nodes/nope")[0] == 404
    assert b.call("GET", "/incidents?status=bogus")[0] == 400
    assert b.call("GET", "/static/../app.py")[0] in (403, 404)
    assert srv.request("GET", "/api/v1/health").status == 200


def test_pages_answer_errors_in_html_and_the_apis_in_json(env: Any) -> None:
    srv, _, pw = env
    b = Browser(srv)
    b.login("vic", pw["vic"])
    for path, status in (("/nodes/<b>nope</b>", 404), ("/no-such-page", 404), ("/users", 403)):
        got, headers, page = b.call("GET", path)
        assert got == status and headers["content-type"].startswith("text/html"), path
        assert f"<h1>{status} · " in page and 'href="/"' in page and "<b>nope" not in page
        assert "script-src 'self'" in headers["content-security-policy"]
    got, headers, page = b.call("POST", "/users", {"action": "add", "name": "x", "role": "viewer"})
    assert got == 403 and "needs the admin role" in page and headers["content-type"].startswith("text/html")
    got, headers, page = Browser(srv).call("POST", "/nodes/1/threshold", {"pps_threshold": "1"})
    assert got == 401 and 'href="/login"' in page  # signed out: the page links to the sign-in
    got, headers, _ = b.call("PUT", "/incidents")
    assert got == 405 and "GET" in headers["allow"] and headers["content-type"].startswith("text/html")
    for path in ("/dash/api/nodes/nope/series?range=1h", "/api/v1/agent/nope", "/api/v1/admin/nodes"):
        got, headers, text = b.call("GET", path)
        assert got in (401, 404) and headers["content-type"].startswith("application/json"), path
        assert "error" in __import__("json").loads(text)
    got, headers, _ = Browser(srv).call("GET", "/events")
    assert got == 401 and headers["content-type"].startswith("application/json")


def test_the_session_cookie_is_secure_under_tls(tmp_path: Path, backend: Backend) -> None:
    import ssl

    from tests.reporter.support import make_tls

    ca, cert, key = make_tls(tmp_path / "tls")
    key.chmod(0o600)
    srv = ServerProc(tmp_path / "srv", ["--tls-cert", str(cert), "--tls-key", str(key)], backend=backend)
    (tmp_path / "srv").mkdir()
    srv.start()
    try:
        user = f"tls-{secrets.token_hex(3)}"  # on PostgreSQL the module's database: another replica's users
        password = cli_inproc("add-user", user, "--role", "viewer", *srv.store_args)["password"]
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=30,
                                           context=ssl.create_default_context(cafile=str(ca)))
        conn.request("POST", "/login", urllib.parse.urlencode({"username": user, "password": password}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        cookie = resp.getheader("Set-Cookie") or ""
        conn.close()
        assert resp.status == 302
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        srv.stop()


def test_an_admin_adds_and_deletes_users_and_a_deleted_users_session_ends(env: Any) -> None:
    srv, _, pw = env
    admin = Browser(srv)
    assert admin.login("admin", pw["admin"])[0] == 302
    token = admin.csrf()
    status, _, page = admin.call("POST", "/users", {"action": "add", "name": "dora", "role": "operator",
                                                    "csrf": token})
    m = re.search(r'<code id="new-password">([^<]+)</code>', page)
    assert status == 200 and m, page[:300]
    dora = Browser(srv)
    assert dora.login("dora", m.group(1))[0] == 302
    assert dora.call("GET", "/commands")[0] == 200
    assert admin.call("POST", "/users", {"action": "add", "name": "dora", "role": "viewer", "csrf": token})[0] == 400
    assert admin.call("POST", "/users", {"action": "delete", "name": "admin", "csrf": token})[0] == 400  # not yourself
    status, _, page = admin.call("POST", "/users", {"action": "delete", "name": "dora", "csrf": token})
    assert status == 200 and "dora" not in page
    status, headers, _ = dora.call("GET", "/commands")  # signed out at once: the session went with the user
    assert status == 302 and headers["location"].startswith("/login")
    assert dora.login("dora", m.group(1))[0] == 401
