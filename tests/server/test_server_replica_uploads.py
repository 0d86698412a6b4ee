"""Captures with two server processes on one PostgreSQL database and one capture directory (replicas):
a chunked upload whose chunks land on either process is reassembled once, a capture stored through one
is served by the other, and an upload in progress survives a replica's restart."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwserver_util import Node, ServerProc, admin_headers, multipart, pg_backend

from floodwatch.server.chunks import CHUNK_DIR
from tests.pgcluster import PgCluster

UA = {"User-Agent": "ftagent/1.9.65"}
CHUNK = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def pair(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, ServerProc]]:
    tmp = tmp_path_factory.mktemp("replicas")
    backend = pg_backend(pg_cluster, tmp)
    shared = ["--pcap-dir", str(tmp / "pcaps"), "--max-upload-bytes", str(16 << 20)]
    servers = []
    for name in ("a", "b"):
        (tmp / name).mkdir()
        servers.append(ServerProc(tmp / name, shared, backend=backend))
    try:
        for s in servers:
            s.start()
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.stop()


def chunk(srv: ServerProc, node: Node, uuid: str, upload: str, index: int, total: int, data: bytes) -> int:
    return srv.request("POST", f"incidents/{uuid}/pcap", node=node, raw=data, headers={
        **UA, "Content-Type": "application/octet-stream", "X-Upload-Id": upload, "X-Chunk-Index": str(index),
        "X-Chunk-Total": str(total)}).status


def test_chunks_alternating_between_replicas_make_one_capture(pair: tuple[ServerProc, ServerProc]) -> None:
    a, b = pair
    node = a.add_node()
    opened = a.post("incidents", {"attack_family": "udp_flood", "peak_pps": 9000.0, "peak_bps": 7.2e7,
                                  "started_at": "2026-11-30T10:00:00+00:00"}, node, headers=UA)
    assert opened.status == 201, opened.raw
    uuid = opened.json["uuid"]
    content = secrets.token_bytes(3 * CHUNK + 777)
    parts = [content[i:i + CHUNK] for i in range(0, len(content), CHUNK)]
    upload = secrets.token_hex(8)
    assert chunk(a, node, uuid, upload, 0, 4, parts[0]) == 202
    assert chunk(b, node, uuid, upload, 1, 4, parts[1]) == 202
    assert chunk(a, node, uuid, upload, 1, 4, parts[1]) == 202  # a retry landing on the other replica
    assert chunk(b, node, uuid, upload, 3, 4, parts[3]) == 409  # out of order, wherever it lands
    assert chunk(a, node, uuid, upload, 2, 4, parts[2]) == 202
    assert chunk(b, node, uuid, upload, 3, 4, parts[3]) == 201
    incident_id = opened.json.get("incident_id") or next(
        i["incident_id"] for i in a.request("GET", "/api/v1/admin/incidents", headers=admin_headers(a)).json
        if i["incident_key"] == uuid)
    for srv in (a, b):  # either replica serves it
        got = srv.request("GET", f"/api/v1/admin/incidents/{incident_id}/pcap", headers=admin_headers(srv))
        assert got.status == 200 and got.raw == content
        assert got.headers["X-Content-SHA256"] == hashlib.sha256(content).hexdigest()
    assert list((a.pcap_dir.parent.parent / "pcaps" / CHUNK_DIR).iterdir()) == []


def test_an_upload_survives_the_restart_of_the_replica_that_took_its_first_chunk(
        pair: tuple[ServerProc, ServerProc]) -> None:
    a, b = pair
    node = a.add_node()
    uuid = a.post("incidents", {"attack_family": "udp_flood", "peak_pps": 9000.0, "peak_bps": 7.2e7,
                                "started_at": "2026-11-30T10:00:00+00:00"}, node, headers=UA).json["uuid"]
    content = secrets.token_bytes(2 * CHUNK)
    upload = secrets.token_hex(8)
    assert chunk(b, node, uuid, upload, 0, 2, content[:CHUNK]) == 202
    b.stop()
    b.start()  # the upload's state is on disk, not in the process
    assert chunk(a, node, uuid, upload, 1, 2, content[CHUNK:]) == 201
    body, ctype = multipart([("pcap", "x.pcap", b"\xd4\xc3\xb2\xa1" + content[:1000])])
    r = b.request("POST", f"incidents/{uuid}/pcap", node=node, raw=body, headers={**UA, "Content-Type": ctype})
    assert r.status == 201, r.raw  # a new capture replaces the old one, through either replica


def test_leftovers_in_a_shared_capture_directory_are_removed_only_when_old(tmp_path: Path) -> None:
    import os
    import time

    from floodwatch.server.upload import clean_pcap_dir

    names = [".upload-live.part", ".upload-dead.part", "incident-7-0123456789abcdef.pcap",
             "incident-8-0123456789abcdef.pcap", "incident-9-0123456789abcdef.pcap"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - 7200
    for name in (".upload-dead.part", "incident-8-0123456789abcdef.pcap", "incident-9-0123456789abcdef.pcap"):
        os.utime(tmp_path / name, (old, old))
    known = {"incident-9-0123456789abcdef.pcap"}
    # replicas: a file being written (or just renamed, not yet committed) by another process stays
    assert clean_pcap_dir(tmp_path, known, older_than=3600) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[2], names[4]])
    assert clean_pcap_dir(tmp_path, known) == 2  # alone with the directory (SQLite), at start: all of them
    assert [p.name for p in tmp_path.iterdir()] == [names[4]]
