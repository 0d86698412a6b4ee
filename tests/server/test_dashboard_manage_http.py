"""The dashboard's notification status page and node removal, over plain HTTP against the real server
process: a webhook channel pointed at a real local receiver, incidents through the agent API."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.helpers import eventually
from tests.server.fwserver_util import Backend, ServerProc, cli_inproc, incident_body, upload
from tests.server.notify_peers import Reply
from tests.server.notify_setup import Peers
from tests.server.test_dashboard_http import Browser

EVIL = '<script>alert("hook")</script>'


def _row(page: str, channel: str) -> str:
    m = re.search(rf"<tr><td>{re.escape(channel)}.*?</tr>", page, re.S)
    assert m, f"no row for {channel}"
    return m.group(0)


def test_notifications_page_shows_each_channels_last_delivery_and_error(peers: Peers, tmp_path: Path,
                                                                       backend: Backend) -> None:
    hook = {"name": "hook", "kind": "webhook", "url": f"{peers.rx.base}/webhook", "families": ["udp_flood"],
            "secret_file": peers.secret_file("hook", peers.webhook_secret)}
    peers.rx.fail["webhook"] = [Reply(400, f"refused: {EVIL}")]  # a refusal: the message fails, no retry
    srv = ServerProc(tmp_path, ["--config", str(peers.config([hook]))], backend=backend).start()
    try:
        node = srv.add_node("edge-n")
        viewer = Browser(srv)
        password = cli_inproc("add-user", "vera", "--role", "viewer", *srv.store_args)["password"]
        viewer.login("vera", password)
        assert 'href="/notifications"' in viewer.call("GET", "/")[2]
        assert srv.post("incident", incident_body(), node).status == 201

        def failed_row() -> str | None:
            row = _row(viewer.call("GET", "/notifications")[2], "hook")
            return row if '<span class="pill failed">1</span>' in row else None

        row = eventually(failed_row, 20, 0.2, message="the failure shown")
        assert "&lt;script&gt;alert(&#34;hook&#34;)&lt;/script&gt;" in row and "<script>" not in row
        assert "HTTP 400" in row and "families: udp_flood" in row and "webhook" in row
        assert re.search(r'class="muted last-sent">-<', row)  # nothing delivered yet
        page = viewer.call("GET", "/notifications")[2]
        assert peers.webhook_secret not in page and peers.rx.base not in page  # never the URL or a secret

        assert srv.post("incident", incident_body(), node).status == 201
        def sent_row() -> str | None:
            row = _row(viewer.call("GET", "/notifications")[2], "hook")
            return row if re.search(r'class="muted last-sent">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<', row) else None

        row = eventually(sent_row, 20, 0.2, message="the delivery shown")
        cells = re.findall(r"<td[^>]*>(\d+)</td>", row)
        assert cells[:2] == ["0", "1"]  # pending 0, sent 1
        assert len(peers.rx.unique("webhook")) == 1
    finally:
        srv.stop()


def test_notifications_page_without_channels(tmp_path: Path, fresh_backend: Backend) -> None:
    srv = ServerProc(tmp_path, backend=fresh_backend).start()  # a database without any channel's messages
    try:
        b = Browser(srv)
        b.login("nina", cli_inproc("add-user", "nina", "--role", "viewer", *srv.store_args)["password"])
        status, _, page = b.call("GET", "/notifications")
        assert status == 200 and "No channels" in page
        assert Browser(srv).call("GET", "/notifications")[0] == 302  # signed out: to the login page
    finally:
        srv.stop()


def _csrf(b: Browser, path: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', b.call("GET", path)[2])
    assert m, f"no CSRF field on {path}"
    return m.group(1)


def test_admin_removes_a_node_after_confirming_and_its_agent_is_refused(tmp_path: Path, backend: Backend) -> None:
    srv = ServerProc(tmp_path, backend=backend).start()
    try:
        doomed, kept = srv.add_node("doomed"), srv.add_node("kept")
        iid = srv.post("incident", incident_body(), doomed).json["incident_id"]
        assert upload(srv, doomed, iid, os.urandom(3000)).status == 201
        capture = [p for p in srv.pcap_dir.iterdir() if p.is_file()]
        assert len(capture) == 1
        assert srv.post("incident", incident_body(), kept).status == 201
        browsers = {}
        for user, role in (("opal", "operator"), ("vik", "viewer"), ("ada", "admin")):
            browsers[role] = Browser(srv)
            browsers[role].login(user, cli_inproc("add-user", user, "--role", role, *srv.store_args)["password"])
        admin = browsers["admin"]
        confirm = admin.call("GET", "/nodes/doomed/remove")
        assert confirm[0] == 200 and 'name="confirm"' in confirm[2]
        assert 'id="remove-node-link"' in admin.call("GET", "/nodes/doomed")[2]
        for role in ("operator", "viewer"):
            b = browsers[role]
            assert 'id="remove-node-link"' not in b.call("GET", "/nodes/doomed")[2]
            assert b.call("GET", "/nodes/doomed/remove")[0] == 403
            assert b.call("POST", "/nodes/doomed/remove", {"csrf": b.csrf(), "confirm": "doomed"})[0] == 403
        assert admin.call("POST", "/nodes/doomed/remove", {"confirm": "doomed"})[0] == 403  # no CSRF token
        token = _csrf(admin, "/nodes/doomed/remove")
        wrong = admin.call("POST", "/nodes/doomed/remove", {"csrf": token, "confirm": "doome"})
        assert wrong[0] == 400 and "Type the node" in wrong[2]
        assert srv.request("GET", "config", node=doomed).status == 200  # nothing removed so far

        status, _, page = admin.call("POST", "/nodes/doomed/remove", {"csrf": token, "confirm": "doomed"})
        assert status == 200 and "Node <b>doomed</b> removed, with 1 incidents" in page and "1 captures" in page
        assert srv.request("GET", "config", node=doomed).status == 401  # at once: no cached credentials
        assert srv.post("incident", incident_body(), doomed).status == 401
        assert admin.call("GET", "/nodes/doomed")[0] == 404 and admin.call("GET", f"/incidents/{iid}")[0] == 404
        assert not capture[0].exists()
        assert srv.request("GET", "config", node=kept).status == 200
        assert "kept" in admin.call("GET", "/incidents")[2]
        assert admin.call("POST", "/nodes/doomed/remove", {"csrf": token, "confirm": "doomed"})[0] == 404
    finally:
        srv.stop()
