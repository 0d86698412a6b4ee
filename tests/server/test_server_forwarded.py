"""A real server with `--trusted-proxy 127.0.0.1/32` behind a real nginx (tests/server/replicas.py, which
sets `X-Forwarded-For $remote_addr`): the dashboard's sign-in limit counts each client's own address, not
the proxy's; an `X-Forwarded-For` from a peer that is not a trusted proxy is ignored; a malformed one from
the proxy is counted and the proxy's address used; /metrics' loopback rule judges the forwarded client.

Clients are told apart by their loopback source address (127.0.0.9, 127.0.0.10, ...), nginx listens on
127.0.0.1: what it forwards is each client's real address."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.server.web.sessions import LOGIN_FAILURES
from tests.helpers import eventually
from tests.server.fwserver_util import Backend, cli, cli_inproc, incident_body
from tests.server.replicas import Replicas, have_nginx, replicas
from tests.server.test_dashboard_http import Browser

pytestmark = pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forwarded") / "server.db"


@pytest.fixture(scope="module")
def fleet(db_file: Path) -> Iterator[Replicas]:
    config = db_file.parent / "floodwatch.toml"  # trusted_proxies from the config file, as an operator sets it
    config.write_text(f'[apiserver]\ndb_path = "{db_file}"\naccess_log = true\n'
                      'trusted_proxies = ["127.0.0.1/32"]\n')
    with replicas(Backend(config=str(config)), count=1, access_log=False) as f:
        yield f


def _via(port: int, source: str) -> Browser:
    return Browser(SimpleNamespace(port=port), source=source)  # type: ignore[arg-type]


def _fail(b: Browser, user: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return b.call("POST", "/login", {"username": user, "password": "wrong"}, headers=headers)[0]


def _exhaust(b: Browser, prefix: str, forwarded: list[str] | None = None) -> None:
    """LOGIN_FAILURES failures from b's address, each for another user name (only the address adds up)."""
    for i in range(LOGIN_FAILURES):
        assert _fail(b, f"{prefix}{i}", forwarded[i] if forwarded else None) == 401


def _scrape(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"floodwatch_server_{name}_total "):
            return float(line.split()[1])
    return 0.0


def test_sign_in_failures_through_nginx_count_per_client(fleet: Replicas, db_file: Path) -> None:
    a, b = _via(fleet.nginx.port, "127.0.0.9"), _via(fleet.nginx.port, "127.0.0.10")
    _exhaust(a, "nx-a")
    assert _fail(a, "nx-a-more") == 429  # this client's address has used up its failures
    # another client through the same proxy is not held up by the first (it was, when both were 127.0.0.1)
    assert _fail(b, "nx-b0") == 401
    # and it cannot borrow another's address: nginx replaces what the client wrote with $remote_addr
    assert _fail(b, "nx-b1", forwarded="127.0.0.11") == 401
    store = SQLiteStore(db_file, create=False)
    try:
        keys = {str(r[0]) for r in store.execute("SELECT key FROM dash_login_failures WHERE key LIKE 'a:%'")}
    finally:
        store.close()
    assert {"a:127.0.0.9", "a:127.0.0.10"} <= keys and "a:127.0.0.1" not in keys and "a:127.0.0.11" not in keys
    # the access log names the client too, not the proxy
    eventually(lambda: '127.0.0.10 "POST /login" 401' in fleet.servers[0].log(), 10, message="access log line")


def test_a_forged_header_from_an_untrusted_peer_is_ignored(fleet: Replicas) -> None:
    direct = fleet.ports[0]
    forger = _via(direct, "127.0.0.12")  # straight to the replica, not through the proxy
    _exhaust(forger, "fg", forwarded=[f"198.51.100.{i}" for i in range(LOGIN_FAILURES)])
    assert _fail(forger, "fg-more", forwarded="198.51.100.200") == 429  # every try counted against 127.0.0.12
    # from the trusted proxy's address, the same header is believed: that forwarded client is not limited
    assert _fail(_via(direct, "127.0.0.1"), "fg-proxied", forwarded="127.0.0.12, 198.51.100.201") == 401


def test_a_malformed_header_from_the_proxy_is_counted_and_never_a_500(fleet: Replicas) -> None:
    direct = fleet.ports[0]
    before = _counter(_scrape(direct)[1], "forwarded_for_malformed")
    proxy = _via(direct, "127.0.0.1")
    for bad in ("not-an-address", "203.0.113.5:4711", "203.0.113.5,", "[2001:db8::1]"):
        status, _, page = proxy.call("GET", "/login", headers={"X-Forwarded-For": bad})
        assert status == 200 and "password" in page
    assert _counter(_scrape(direct)[1], "forwarded_for_malformed") == before + 4


def test_metrics_loopback_rule_judges_the_forwarded_client(fleet: Replicas) -> None:
    direct = fleet.ports[0]
    assert _scrape(direct)[0] == 200  # the proxy's host itself (no header): loopback
    assert _scrape(direct, {"X-Forwarded-For": "203.0.113.5"})[0] == 403  # a remote client via the proxy
    assert _scrape(direct, {"X-Forwarded-For": "127.0.0.5"})[0] == 200


def test_the_dashboard_works_through_the_proxy_with_forwarded_addresses(fleet: Replicas) -> None:
    """Sign-in, a page and the live updates are served to a forwarded client as to any other."""
    password = cli_inproc("add-user", "fwd-olga", "--role", "operator", *fleet.store_args)["password"]
    user = _via(fleet.nginx.port, "127.0.0.13")
    assert user.login("fwd-olga", password)[0] == 302
    status, _, page = user.call("GET", "/")
    assert status == 200 and 'data-csrf="' in page
    conn = http.client.HTTPConnection("127.0.0.1", fleet.ports[0], timeout=30)  # the proxy's address
    conn.request("GET", "/events", headers={"Cookie": f"fw_session={user.cookie}", "X-Forwarded-For": "127.0.0.13"})
    resp = conn.getresponse()
    try:
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        srv = fleet.servers[0]
        node = srv.add_node("edge-fwd")
        opened = srv.post("incident", incident_body(), node)
        assert opened.status == 201
        while line := resp.fp.readline():  # the socket's timeout bounds the wait
            data = json.loads(line[6:]) if line.startswith(b"data: ") else None
            if isinstance(data, dict) and data.get("incident_id") == opened.json["incident_id"]:
                break
        else:
            raise AssertionError("the live updates ended before the incident came")
    finally:
        conn.close()


def test_a_bad_trusted_proxy_stops_the_server_with_the_reason(tmp_path: Any) -> None:
    done = cli("--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:0", "--trusted-proxy", "10.0.0.1/8",
               check=False)
    assert done.returncode != 0 and "trusted_proxies: '10.0.0.1/8'" in done.stderr + done.stdout
    assert "host bits set" in done.stderr + done.stdout
