"""The dashboard in a real browser (headless Chromium from Debian, driven by Selenium) against the real
server process: sign-in, live updates from the agent API, the incident page's charts and capture,
commands by role, escaping of agent-sent text. Screenshots go to $FLOODWATCH_SCREENSHOTS (default: a temporary
directory)."""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from tests.server.dashboard_util import browser, history, need_browser, shoot, sign_in, small_pcap
from tests.server.fwserver_util import Node, ServerProc, cli, cli_inproc, incident_body, upload

pytestmark = pytest.mark.slow
XSS = "<script>window.__pwned=1</script>"
LIVE = 1.0  # the promise: on an open page within 1 s, without reload


class Env:
    def __init__(self, srv: ServerProc, node: Node, passwords: dict[str, str], driver: Any, downloads: Path):
        self.srv, self.node, self.passwords, self.driver, self.downloads = srv, node, passwords, driver, downloads
        self.base = f"http://127.0.0.1:{srv.port}"

    def login(self, user: str) -> None:
        sign_in(self.driver, self.base, user, self.passwords[user])
        eventually(lambda: self.driver.current_url.rstrip("/") == self.base, 10, message=f"{user} signed in")

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def metrics(self, pps: int) -> None:
        t = time.time()
        samples = [{"pps": pps, "bps": pps * 800, "tcp_pct": 10.0, "udp_pct": 88.0, "icmp_pct": 2.0,
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t - i))} for i in range(3)]
        assert self.srv.post("metrics", samples, self.node).status == 200


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_browser()
    tmp = tmp_path_factory.mktemp("dash")
    srv = ServerProc(tmp).start()
    try:
        node = srv.add_node("edge-1")
        hb = {"agent_version": "0.1.0", "os": "Debian 12", "uptime": 100}
        assert srv.post("heartbeat", hb, node).status == 200
        for name, pps, spike in (("game-eu-2", 42000, 150), ("isp-core-1", 180000, -1), ("web-3", 900, -1)):
            other = srv.add_node(name)  # a fleet to look at: 15 minutes of history each
            assert srv.post("heartbeat", hb, other).status == 200
            assert srv.post("metrics", history(pps, spike_at=spike), other).status == 200
            cli("set-threshold", name, str(pps * 3), "--db", str(srv.db))
        assert srv.post("metrics", history(3000), node).status == 200
        passwords = {"admin": (tmp / "dashboard-admin-password").read_text().strip()}
        for user, role in (("olga", "operator"), ("vic", "viewer")):
            passwords[user] = cli_inproc("add-user", user, "--role", role, "--db", str(srv.db))["password"]
        downloads = tmp / "downloads"
        downloads.mkdir()
        with browser(downloads) as driver:
            yield Env(srv, node, passwords, driver, downloads)
    finally:
        srv.stop()


def _text(env: Env, css: str) -> str:
    return str(env.js(f"var e = document.querySelector({css!r}); return e ? e.textContent : null") or "")


def test_login_refuses_a_wrong_password_then_signs_in(env: Env) -> None:
    sign_in(env.driver, env.base, "admin", "not-the-password")
    eventually(lambda: "Wrong user name or password" in _text(env, "#login-error"), 10)
    shoot(env.driver, "login")
    env.login("admin")
    assert "edge-1" in _text(env, "#fleet")


def test_metrics_and_incidents_reach_open_pages_live(env: Env) -> None:
    env.login("admin")
    env.js("window.__same_page = 1")
    env.metrics(4321)
    eventually(lambda: _text(env, '#fleet tr[data-node-id="1"] [data-f="pps"]') == "4.32 k", LIVE,
               message="current pps on the fleet page")
    opened = env.srv.post("incident", incident_body(attack_subtype=XSS), env.node)
    assert opened.status == 201
    first = opened.json["incident_id"]
    eventually(lambda: "1 active" in _text(env, '#fleet tr[data-node-id="1"] [data-f="active"]'), LIVE,
               message="the new incident on the fleet page")
    assert env.js("return window.__same_page") == 1  # not reloaded
    shoot(env.driver, "fleet")

    env.driver.get(f"{env.base}/incidents")
    env.js("window.__same_page = 1")
    second = env.srv.post("incident", incident_body(attack_family="syn_flood"), env.node).json["incident_id"]
    eventually(lambda: _text(env, f'#incidents tr[data-incident-id="{second}"]') != "", LIVE,
               message="the new incident on /incidents")
    assert env.srv.post("incident", {"incident_id": first, "peak_pps": 250000}, env.node).status == 200
    eventually(lambda: _text(env, f'#incidents tr[data-incident-id="{first}"] [data-f="peak_pps"]') == "250 k",
               LIVE, message="an update on /incidents")
    resolved = {"incident_id": first, "status": "resolved", "ended_at": "2026-11-28T10:20:00Z"}
    assert env.srv.post("incident", resolved, env.node).status == 200
    eventually(lambda: _text(env, f'#incidents tr[data-incident-id="{first}"] [data-f="status"]') == "resolved",
               LIVE, message="a resolution on /incidents")
    assert env.js("return window.__same_page") == 1
    shoot(env.driver, "incidents")


def test_agent_text_is_shown_as_text(env: Env) -> None:
    env.login("admin")
    body = incident_body(attack_subtype=XSS, geo_breakdown={"<img src=x onerror=window.__pwned=2>": 5},
                         target_ips=[XSS])
    incident_id = env.srv.post("incident", body, env.node).json["incident_id"]
    for page in ("/", "/nodes/1", "/incidents", f"/incidents/{incident_id}"):
        env.driver.get(env.base + page)
        assert env.js("return window.__pwned") is None, page
        assert env.js("return document.querySelectorAll('main script, main img').length") == 0, page
        if page.startswith("/incidents"):
            assert XSS in _text(env, "main"), page  # the agent's text, shown as text


def test_incident_page_charts_and_capture_download(env: Env) -> None:
    env.login("admin")
    node = env.node
    incident_id = env.srv.post("incident", incident_body(), node).json["incident_id"]
    for pps in (150000, 210000, 180000):
        env.srv.post("incident", {"incident_id": incident_id, "peak_pps": pps}, node)
    capture = small_pcap()
    assert upload(env.srv, node, incident_id, capture).status in (200, 201)
    env.driver.get(f"{env.base}/incidents/{incident_id}")
    eventually(lambda: env.js("return document.querySelector('#chart-incident').dataset.drawn") == "1", 5)
    assert env.js("return document.querySelectorAll('#chart-incident svg path').length") >= 1
    assert env.js("return document.querySelectorAll('svg.bars rect').length") >= 3  # protocols, flags, countries
    env.driver.find_element("id", "pcap-download").click()
    target = env.downloads / f"incident-{incident_id}.pcap"
    eventually(lambda: target.exists() and target.stat().st_size == len(capture), 15, message="the download")
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(capture).digest()

    def state() -> str:
        return str(env.js("var d = document.getElementById('dissection'); return d ? d.dataset.state : ''"))

    env.driver.find_element("id", "dissect-btn").click()  # tshark on the server, as nobody
    # the form's POST answers with this page again, now running (or done): reloading before it has landed
    # would cancel the submission
    eventually(lambda: state() in ("running", "done", "failed"), 15, message="the dissection queued")

    def dissected() -> bool:
        if state() != "done":
            env.driver.get(f"{env.base}/incidents/{incident_id}")
        assert state() != "failed", _text(env, "#dissection")
        return state() == "done"

    eventually(dissected, 60, interval=0.5, message="the dissection")
    assert "53" in _text(env, "#dissection") and "198.18.0.9" in _text(env, "#dissection")
    shoot(env.driver, "incident")


def test_node_page_draws_its_charts(env: Env) -> None:
    env.login("admin")
    env.metrics(5000)
    env.driver.get(f"{env.base}/nodes/1")
    eventually(lambda: env.js("return document.getElementById('node-charts').dataset.drawn") == "1h", 5)
    assert env.js("return document.querySelectorAll('#chart-pps svg path').length") >= 1
    env.driver.find_element("css selector", '#ranges button[data-range="30d"]').click()
    eventually(lambda: env.js("return document.getElementById('node-charts').dataset.drawn") == "30d", 5)
    env.driver.find_element("css selector", '#ranges button[data-range="15m"]').click()
    eventually(lambda: env.js("return document.getElementById('node-charts').dataset.drawn") == "15m", 5)
    shoot(env.driver, "node")


def _post_as(env: Env, path: str, form: dict[str, str], with_csrf: bool = True) -> int:
    """A direct POST (not through the page) with the browser's session cookie."""
    cookie = env.driver.get_cookie("fw_session")["value"]
    csrf = env.js("return document.body.dataset.csrf") if with_csrf else ""
    conn = http.client.HTTPConnection("127.0.0.1", env.srv.port, timeout=10)
    conn.request("POST", path, urllib.parse.urlencode({**form, "csrf": csrf}),
                 {"Cookie": f"fw_session={cookie}", "Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_operator_queues_a_command_and_a_viewer_cannot(env: Env) -> None:
    incident_id = env.srv.post("incident", incident_body(), env.node).json["incident_id"]
    env.login("olga")
    env.driver.get(f"{env.base}/incidents/{incident_id}")
    env.driver.find_element("name", "block_top").clear()
    env.driver.find_element("name", "block_top").send_keys("1")
    env.driver.find_element("id", "preview-btn").click()
    eventually(lambda: "runs: iptables -t filter -I INPUT -s 198.18.0.9 -j DROP" in _text(env, "#preview"), 5)
    env.driver.find_element("id", "queue-btn").click()
    eventually(lambda: "198.18.0.9" in _text(env, "#incident-commands"), 5, message="the queued command")
    assert env.srv.request("GET", "config", node=env.node).json["pending_commands"][-1]["command"] == \
        "iptables -I INPUT -s 198.18.0.9 -j DROP"
    assert _post_as(env, "/commands", {"node": "1", "commands": "iptables -I INPUT -s 192.0.2.1 -j DROP"},
                    with_csrf=False) == 403  # no CSRF token: refused
    env.driver.get(f"{env.base}/commands")
    shoot(env.driver, "commands")

    env.login("vic")
    env.driver.get(f"{env.base}/incidents/{incident_id}")
    assert env.js("return document.getElementById('queue-form')") is None
    before = len(env.srv.request("GET", "config", node=env.node).json["pending_commands"])
    assert _post_as(env, "/commands", {"node": "1", "commands": "iptables -I INPUT -s 192.0.2.1 -j DROP"}) == 403
    assert _post_as(env, "/nodes/1/threshold", {"pps_threshold": "1"}) == 403
    assert len(env.srv.request("GET", "config", node=env.node).json["pending_commands"]) == before


def test_admin_pages(env: Env) -> None:
    env.login("admin")
    env.driver.get(f"{env.base}/users")
    assert "olga" in _text(env, "main") and "vic" in _text(env, "main")
    shoot(env.driver, "users")
