"""Two real server processes on one PostgreSQL database: no dashboard state lives in one process only.
A session made on one is valid on the other (its CSRF token too) and survives a restart; sign-in
failures count across both; signing out on one ends the session on both; a live-update client (SSE,
and a real browser) on one process sees what agents post to the other."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floodwatch.server.pg_store import EVENTS_CHANNEL, listener_name
from tests.helpers import eventually
from tests.pgcluster import PgCluster
from tests.server.dashboard_util import browser, need_browser, sign_in
from tests.server.fwserver_util import Backend, Node, ServerProc, cli_inproc, incident_body, pg_backend
from tests.server.test_dashboard_http import Browser

LIVE = 5.0  # seconds: a commit on one process reaches a page on the other (the browser test: 1 s on one)


@pytest.fixture(scope="module")
def pg(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return pg_backend(pg_cluster, tmp_path_factory.mktemp("replicas"))


@pytest.fixture(scope="module")
def pair(pg: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, ServerProc]]:
    a = ServerProc(tmp_path_factory.mktemp("replica-a"), backend=pg).start()
    b = ServerProc(tmp_path_factory.mktemp("replica-b"), backend=pg).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _user(srv: ServerProc, name: str, role: str = "operator") -> str:
    return str(cli_inproc("add-user", name, "--role", role, *srv.store_args)["password"])


def _signed_in(srv: ServerProc, cookie: str) -> bool:
    b = Browser(srv)
    b.cookie = cookie
    status, _, page = b.call("GET", "/")
    return status == 200 and 'data-csrf="' in page


def test_a_session_from_one_process_works_on_the_other_and_survives_a_restart(
        pair: tuple[ServerProc, ServerProc]) -> None:
    a, b = pair
    node = a.add_node("edge-s")
    on_a = Browser(a)
    assert on_a.login("olga", _user(a, "olga"))[0] == 302
    token = on_a.csrf()
    on_b = Browser(b)
    on_b.cookie = on_a.cookie
    assert _signed_in(b, on_a.cookie)
    # the CSRF token of a page served by A is accepted by B (and a wrong one refused there too)
    assert on_b.call("POST", "/nodes/edge-s/threshold", {"pps_threshold": "4242", "csrf": "x" * 43})[0] == 403
    assert on_b.call("POST", "/nodes/edge-s/threshold", {"pps_threshold": "4242", "csrf": token})[0] == 302
    assert a.request("GET", "config", node=node).json["pps_threshold"] == 4242

    a.stop()  # a restart signs nobody out
    a.start()
    assert _signed_in(a, on_a.cookie)
    assert on_b.call("POST", "/logout", {"csrf": token})[0] == 302  # signing out on B...
    assert not _signed_in(a, on_a.cookie)  # ...ends the session on A


def test_sign_in_failures_count_across_processes(pair: tuple[ServerProc, ServerProc]) -> None:
    a, b = pair
    password = _user(a, "rosa", "viewer")
    for srv in (a, b, a, b, a):
        assert Browser(srv, source="127.0.0.9").login("rosa", "wrong")[0] == 401
    assert Browser(b, source="127.0.0.9").login("rosa", password)[0] == 429  # B knows A's failures
    assert Browser(a, source="127.0.0.10").login("rosa", password)[0] == 429  # the user name, from anywhere


class Events:
    """A live-update client: reads /events in a thread and keeps every (event, data) it got."""

    def __init__(self, srv: ServerProc, cookie: str) -> None:
        self.got: list[tuple[str, Any]] = []
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        self.conn.request("GET", "/events", headers={"Cookie": f"fw_session={cookie}"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.getheader("Content-Type") == "text/event-stream"
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event = ""
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            while line := self.resp.fp.readline():
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    self.got.append((event, json.loads(text[6:])))

    def find(self, event: str, pred: Any) -> Any:
        return next((d for e, d in list(self.got) if e == event and pred(d)), None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        self.conn.close()
        self.thread.join(10)


def test_an_sse_client_on_one_process_sees_what_agents_post_to_the_other(pair: tuple[ServerProc, ServerProc]) -> None:
    a, b = pair
    node = a.add_node("edge-live")
    viewer = Browser(b)
    assert viewer.login("lena", _user(a, "lena", "viewer"))[0] == 302
    on_b, on_a = Events(b, viewer.cookie), Events(a, viewer.cookie)
    try:
        opened = a.post("incident", incident_body(attack_subtype="<b>x</b>"), node)
        assert opened.status == 201
        iid = opened.json["incident_id"]
        got = eventually(lambda: on_b.find("incident", lambda d: d["incident_id"] == iid), LIVE,
                         message="the incident posted to A, on B's live updates")
        assert got["node_name"] == "edge-live" and got["status"] == "active" and got["node_active"] == 1
        assert got["attack_subtype"] == "<b>x</b>"  # as stored: the page escapes it
        sample = {"pps": 31337, "bps": 9000, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        assert a.post("metrics", [sample], node).status == 200
        eventually(lambda: on_b.find("pps", lambda d: any(v[1] == 31337 for v in d.values())), LIVE,
                   message="A's sample on B's live updates")
        # and the other way: resolved through B, seen on A
        resolved = {"incident_id": iid, "status": "resolved", "ended_at": "2026-11-30T10:05:00Z"}
        assert b.post("incident", resolved, node).status == 200
        eventually(lambda: on_a.find("incident", lambda d: d["incident_id"] == iid and d["status"] == "resolved"),
                   LIVE, message="the resolution posted to B, on A's live updates")
    finally:
        on_b.close()
        on_a.close()


@pytest.mark.slow
def test_a_browser_on_one_process_shows_incidents_posted_to_the_other_live(
        pair: tuple[ServerProc, ServerProc], tmp_path: Path) -> None:
    need_browser()
    a, b = pair
    node: Node = a.add_node("edge-browser")
    password = _user(a, "bea", "viewer")
    base = f"http://127.0.0.1:{b.port}"
    with browser(tmp_path) as driver:
        sign_in(driver, base, "bea", password)
        eventually(lambda: driver.current_url.rstrip("/") == base, 10, message="signed in on B")

        def cell(field: str) -> str:
            return str(driver.execute_script(
                "var r = [...document.querySelectorAll('#fleet tr[data-node-id]')].find("
                "t => t.textContent.includes('edge-browser')); "
                f"var c = r && r.querySelector('[data-f=\"{field}\"]'); return c ? c.textContent : ''"))

        assert cell("active").strip() == "0"
        driver.execute_script("window.__same_page = 1")
        assert a.post("incident", incident_body(), node).status == 201
        eventually(lambda: "1 active" in cell("active"), LIVE, message="A's incident on B's fleet page")
        sample = {"pps": 4321, "bps": 9000, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        assert a.post("metrics", [sample], node).status == 200
        eventually(lambda: cell("pps") == "4.32 k", LIVE, message="A's sample on B's fleet page")
        assert driver.execute_script("return window.__same_page") == 1  # live, not reloaded


def test_live_updates_resume_after_the_listening_connection_is_cut(
        pair: tuple[ServerProc, ServerProc], pg: Backend, pg_cluster: PgCluster) -> None:
    a, b = pair
    node = a.add_node("edge-cut")
    viewer = Browser(b)
    assert viewer.login("carl", _user(a, "carl", "viewer"))[0] == 302
    on_b = Events(b, viewer.cookie)
    try:
        db = pg.url.rsplit("/", 1)[1]
        cut = pg_cluster.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                              f"'{db}' AND application_name = '{listener_name(EVENTS_CHANNEL)}'", db=db)
        assert int(cut) == 2  # one connection listening for live events per process (not the node removals')

        def delivered() -> bool:  # posted until a re-established listener on B passes one on
            return _seen_within(on_b, a.post("incident", incident_body(), node).json["incident_id"], 0.5)

        eventually(delivered, 20, interval=0.2, message="live updates on B after its listener was cut")
        assert "live updates: " in b.log() and "listening again" in b.log()
        status, _, text = Browser(b).call("GET", "/metrics")  # counted (loopback, no token set)
        assert status == 200 and "floodwatch_server_sse_listen_errors_total 1" in text
    finally:
        on_b.close()


def _seen_within(events: Events, incident_id: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if events.find("incident", lambda d: d["incident_id"] == incident_id) is not None:
            return True
        time.sleep(0.02)
    return False


def _counter(srv: ServerProc, name: str) -> int:
    """A counter of the server's /metrics (loopback, no token set); 0 before it is first counted."""
    status, _, text = Browser(srv).call("GET", "/metrics")
    assert status == 200
    line = next((ln for ln in text.splitlines() if ln.startswith(f"floodwatch_server_{name}_total ")), None)
    return int(float(line.split()[1])) if line else 0


def _stays(pred: Any, seconds: float) -> bool:
    """True when `pred()` holds every 0.1 s for `seconds` (an absence: nothing to wait for)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pred():
            return False
        time.sleep(0.1)
    return True


def test_samples_reach_a_replica_by_polling_only_while_a_page_is_open_and_are_never_notified(
        pair: tuple[ServerProc, ServerProc], pg: Backend, pg_cluster: PgCluster,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import psycopg

    a, _ = pair
    c = ServerProc(tmp_path_factory.mktemp("replica-c"), backend=pg).start()  # no page ever opened on it
    listen = psycopg.connect(pg.url, password=pg_cluster.password, autocommit=True)
    try:
        listen.execute(f"LISTEN {EVENTS_CHANNEL}")
        node = a.add_node("edge-poll")
        sample = {"pps": 27182, "bps": 9000, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        assert a.post("metrics", [sample], node).status == 200
        # no live client on C: not one query for samples, over several poll periods
        assert _stays(lambda: _counter(c, "sse_polls") == 0, 3.0)

        viewer = Browser(c)
        assert viewer.login("paul", _user(a, "paul", "viewer"))[0] == 302
        on_c = Events(c, viewer.cookie)
        try:
            later = {"pps": 16180, "bps": 9000,
                     "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))}
            assert a.post("metrics", [later], node).status == 200
            eventually(lambda: on_c.find("pps", lambda d: any(v[1] == 16180 for v in d.values())), LIVE,
                       message="A's sample on C's live updates")
            assert _counter(c, "sse_polls") >= 1
            iid = a.post("incident", incident_body(), node).json["incident_id"]  # incidents: still NOTIFYed
            eventually(lambda: on_c.find("incident", lambda d: d["incident_id"] == iid), LIVE,
                       message="A's incident on C's live updates")
        finally:
            on_c.close()
        payloads = [json.loads(n.payload) for n in listen.notifies(timeout=0.5)]
        assert ["i", iid] in [item for p in payloads for item in p]  # the incident's commit NOTIFYed it...
        assert all(item[0] == "i" for p in payloads for item in p)  # ...and no commit NOTIFYed a sample
    finally:
        listen.close()
        c.stop()
