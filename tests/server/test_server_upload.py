"""pcap uploads over real sockets: streamed, limited, named by the server, nothing left by failures;
slow clients; the per-node rate limit."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fwserver_util import Backend, Node, ServerProc, cli, cli_inproc, incident_body, multipart, running, upload

from tests.helpers import eventually

LIMIT = 1 << 20


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("upload"), ["--max-upload-bytes", str(LIMIT), "--read-timeout", "1"],
                   backend=backend)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def node(srv: ServerProc) -> Node:
    return srv.add_node()


def _incident(srv: ServerProc, node: Node) -> int:
    return int(srv.post("incident", incident_body(), node).json["incident_id"])


def _stored_files(srv: ServerProc) -> list[str]:
    return sorted(p.name for p in srv.pcap_dir.iterdir() if p.is_file())


def _no_partial_files(srv: ServerProc) -> bool:
    return not any(name.startswith(".upload-") for name in _stored_files(srv))


def test_upload_is_stored_under_a_server_name_and_fetched_back_intact(srv: ServerProc, node: Node,
                                                                      tmp_path: os.PathLike[str]) -> None:
    iid = _incident(srv, node)
    content = os.urandom(300_000)
    r = upload(srv, node, iid, content)
    assert r.status == 201, r.raw
    assert r.json == {"incident_id": iid, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    listed = {i["incident_id"]: i for i in cli_inproc("incidents", *srv.store_args)}
    assert listed[iid]["pcap_stored"] is True and listed[iid]["pcap_bytes"] == len(content)
    out = f"{tmp_path}/fetched.pcap"
    cli("fetch-pcap", str(iid), "--out", out, *srv.store_args)
    with open(out, "rb") as f:
        assert f.read() == content
    stored = [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]
    assert len(stored) == 1 and (os.stat(srv.pcap_dir / stored[0]).st_mode & 0o777) == 0o600
    again = os.urandom(1000)  # a second upload replaces the first; one file per incident
    assert upload(srv, node, iid, again).status == 201
    stored = [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]
    assert len(stored) == 1 and (srv.pcap_dir / stored[0]).read_bytes() == again


@pytest.mark.parametrize("name", ["../../escape.pcap", "/tmp/fw-escape.pcap", "..", "a/../../b.pcap",
                                  "x\x00y.pcap", "....//....//etc/passwd"])
def test_path_tricks_in_the_file_name_are_ignored(srv: ServerProc, node: Node, name: str) -> None:
    iid = _incident(srv, node)
    before = set(os.listdir(srv.pcap_dir.parent))
    r = upload(srv, node, iid, b"pcap-bytes", filename=name)
    assert set(os.listdir(srv.pcap_dir.parent)) == before
    assert not os.path.exists("/tmp/fw-escape.pcap")
    if "\x00" in name:  # not a valid header at all
        assert r.status == 400 and r.json["error"].startswith("body:"), r.raw
        return
    assert r.status == 201, r.raw
    assert [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]


def test_oversized_upload_is_413_and_leaves_nothing(srv: ServerProc, node: Node) -> None:
    iid = _incident(srv, node)
    r = upload(srv, node, iid, os.urandom(LIMIT + 1))
    assert r.status == 413, r.raw
    assert r.json["error"].startswith("file:")
    eventually(lambda: _no_partial_files(srv), 10, message="no partial upload left")
    assert not [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]


def test_declared_length_over_the_limit_is_refused_before_reading(srv: ServerProc, node: Node) -> None:
    iid = _incident(srv, node)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        head = (f"POST /api/v1/agent/pcap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.key}\r\n"
                f"X-Node-UUID: {node.uuid}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {200 * 1024 * 1024}\r\n\r\n")
        s.sendall(head.encode())
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert not [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]


def test_truncated_upload_leaves_nothing_behind(srv: ServerProc, node: Node) -> None:
    iid = _incident(srv, node)
    body, ctype = multipart([("incident_id", None, str(iid).encode()), ("file", "a.pcap", os.urandom(600_000))])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        head = (f"POST /api/v1/agent/pcap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.key}\r\n"
                f"X-Node-UUID: {node.uuid}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")
        s.sendall(head.encode() + body[: len(body) // 2])
        eventually(lambda: not _no_partial_files(srv), 10, message="the upload has started")
    # the client is gone mid-file
    eventually(lambda: _no_partial_files(srv), 10, message="partial upload removed")
    assert not [n for n in _stored_files(srv) if n.startswith(f"incident-{iid}-")]
    assert not {i["incident_id"]: i for i in cli_inproc("incidents", *srv.store_args)}[iid]["pcap_stored"]


def test_a_silent_client_gets_408_and_its_partial_file_is_removed(srv: ServerProc, node: Node) -> None:
    iid = _incident(srv, node)
    body, ctype = multipart([("incident_id", None, str(iid).encode()), ("file", "a.pcap", os.urandom(200_000))])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        head = (f"POST /api/v1/agent/pcap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.key}\r\n"
                f"X-Node-UUID: {node.uuid}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")
        s.sendall(head.encode() + body[:100_000])  # then silence (read_timeout is 1 s)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply
    eventually(lambda: _no_partial_files(srv), 10, message="partial upload removed")



def _json_post(srv: ServerProc, node: Node, body: bytes) -> str:
    return (f"POST /api/v1/agent/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.key}\r\n"
            f"X-Node-UUID: {node.uuid}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")


def test_a_json_body_in_pieces_is_read_whole_and_a_silent_one_gets_408(srv: ServerProc, node: Node) -> None:
    """A body that has not all arrived with its head is waited for (read_timeout: 1 s here): in two
    pieces it is served; cut short, 408 naming the timeout. (A whole one is read without waiting.)"""
    body = b'{"pps": 1200, "bps": 9600000, "tcp_pct": 50.0}'
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(_json_post(srv, node, body).encode() + body[:10])
        time.sleep(0.2)  # the rest later, within read_timeout; the answer is the same if it came at once
        s.sendall(body[10:])
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 200") and reply.endswith('{"accepted": 1}'), reply
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.sendall(_json_post(srv, node, body).encode() + body[:10])  # then silence
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and "body: nothing received for 1 s" in reply, reply

@pytest.mark.parametrize(("fields", "status", "field"), [
    ([("file", "a.pcap", b"x")], 400, "incident_id"),
    ([("incident_id", None, b"1")], 400, "file"),
    ([("incident_id", None, b"abc"), ("file", "a.pcap", b"x")], 400, "incident_id"),
    ([("incident_id", None, b"-4"), ("file", "a.pcap", b"x")], 400, "incident_id"),
    ([("incident_id", None, b"999999999"), ("file", "a.pcap", b"x")], 404, "incident_id"),
    ([("incident_id", None, b"1"), ("file", "a.pcap", b"x"), ("file", "b.pcap", b"y")], 400, "file"),
    ([("incident_id", None, b"1"), ("other", None, b"x")], 400, "file"),  # extra fields are ignored
    ([("incident_id", None, b"1"), ("other", None, b"x" * 100_000)], 413, "other"),
])
def test_bad_upload_forms(srv: ServerProc, node: Node, fields: list[tuple[str, str | None, bytes]], status: int,
                          field: str) -> None:
    body, ctype = multipart(fields)
    r = srv.request("POST", "pcap", node=node, raw=body, headers={"Content-Type": ctype})
    assert r.status == status, r.raw
    assert r.json["error"].startswith(f"{field}:"), r.json
    eventually(lambda: _no_partial_files(srv), 10)


def test_upload_for_another_nodes_incident_is_404(srv: ServerProc, node: Node) -> None:
    other = srv.add_node()
    iid = _incident(srv, other)
    assert upload(srv, node, iid, b"x").status == 404
    r = srv.request("POST", "pcap", node=node, body={"incident_id": iid})
    assert r.status == 400 and r.json["error"].startswith("body:")


def test_a_slow_client_does_not_hold_up_others(srv: ServerProc, node: Node) -> None:
    body = b'{"agent_version": "1", "uptime": 5, "os": "dribbled"}'
    done = threading.Event()
    replies: list[str] = []

    def dribble() -> None:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
            s.sendall((f"POST /api/v1/agent/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.key}\r\n"
                       f"X-Node-UUID: {node.uuid}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
            for i in range(len(body)):  # one byte at a time, always inside the read timeout
                s.sendall(body[i:i + 1])
                if done.wait(0.02):
                    pass
            replies.append(s.recv(4096).decode())

    t = threading.Thread(target=dribble)
    t.start()
    try:
        served = 0
        while t.is_alive() and served < 20:  # others are answered while the slow one is still sending
            assert srv.post("metrics", {"pps": 1, "bps": 8}, node).status == 200
            served += 1
        assert served >= 1
    finally:
        t.join(30)
    assert replies and replies[0].startswith("HTTP/1.1 200"), replies


def test_rate_limit_answers_429_with_retry_after_per_node(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    with running(Path(tmp_path), "--rate-limit", "0.5", "--rate-burst", "3") as srv:
        a, b = srv.add_node(), srv.add_node()
        codes = [srv.post("metrics", {"pps": 1, "bps": 8}, a) for _ in range(4)]
        assert [c.status for c in codes[:3]] == [200, 200, 200]
        assert codes[3].status == 429
        assert int(codes[3].headers["Retry-After"]) >= 1
        assert srv.post("metrics", {"pps": 1, "bps": 8}, b).status == 200  # another node is not affected
        wait = int(codes[3].headers["Retry-After"])
        deadline = time.monotonic() + wait + 5

        def allowed_again() -> bool:
            return srv.post("metrics", {"pps": 1, "bps": 8}, a).status == 200

        eventually(allowed_again, timeout=deadline - time.monotonic(), interval=0.5)


def test_http_keepalive_connection_serves_many_requests(srv: ServerProc, node: Node) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        for i in range(5):
            conn.request("POST", "/api/v1/agent/metrics", body=f'{{"pps": {i}, "bps": 1}}', headers=node.headers())
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
    finally:
        conn.close()
