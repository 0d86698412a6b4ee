"""kill -9 of the server in the middle of a stream of writes: after a restart the database is consistent
and every write the server acknowledged is there; interrupted uploads leave nothing behind."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import threading
from pathlib import Path

import pytest
from fwserver_util import Backend, Node, ServerProc, multipart

from tests.helpers import eventually


class Writer(threading.Thread):
    """One agent writing metrics, incidents and pcaps as fast as it can, remembering what was acked."""

    def __init__(self, srv: ServerProc, node: Node, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.srv, self.node, self.stop = srv, node, stop
        self.acked_metrics: list[int] = []
        self.acked_incidents: dict[str, int] = {}
        self.acked_pcaps: dict[int, str] = {}
        self.failures = 0
        self.seq = 0

    def _post(self, path: str, data: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        try:
            conn.request("POST", f"/api/v1/agent/{path}", body=data,
                         headers={**self.node.headers(), "Content-Type": ctype})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def step(self) -> None:
        self.seq += 1
        if self.seq % 10 == 0:
            key = secrets.token_hex(8)
            while not self.stop.is_set():  # retry the open until acked: the key makes it idempotent
                try:
                    status, raw = self._post("incident", json.dumps(
                        {"incident_key": key, "attack_family": "syn_flood", "severity": "low"}).encode())
                except OSError:
                    self.failures += 1
                    continue
                if status in (200, 201):
                    iid = json.loads(raw)["incident_id"]
                    self.acked_incidents[key] = iid
                    if self.seq % 30 == 0:
                        self.upload(iid)
                    return
            return
        batch = [{"pps": self.seq * 1000 + i, "bps": 8} for i in range(5)]
        try:
            status, _ = self._post("metrics", json.dumps(batch).encode())
        except OSError:
            self.failures += 1
            return
        if status == 200:
            self.acked_metrics.extend(s["pps"] for s in batch)

    def upload(self, iid: int) -> None:
        content = os.urandom(400_000)
        body, ctype = multipart([("incident_id", None, str(iid).encode()), ("file", "x.pcap", content)])
        try:
            status, _ = self._post("pcap", body, ctype)
        except OSError:
            self.failures += 1
            return
        if status == 201:
            self.acked_pcaps[iid] = hashlib.sha256(content).hexdigest()

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()

    def acked(self) -> int:
        return len(self.acked_metrics) + len(self.acked_incidents)


@pytest.mark.slow
def test_kill_9_mid_stream_loses_no_acknowledged_write(tmp_path: Path, backend: Backend) -> None:
    srv = ServerProc(tmp_path, backend=backend).start()
    nodes = [srv.add_node(f"crash-{i}") for i in range(3)]
    stop = threading.Event()
    writers = [Writer(srv, n, stop) for n in nodes]
    for w in writers:
        w.start()
    try:
        def more_acked(base: int) -> None:
            eventually(lambda: sum(w.acked() for w in writers) > base + 300, 60, message="writes acked")

        for _ in range(2):  # two crashes, each in the middle of the stream
            more_acked(sum(w.acked() for w in writers))
            srv.kill9()
            srv.start()
        more_acked(sum(w.acked() for w in writers))
    finally:
        stop.set()
        for w in writers:
            w.join(30)
        srv.stop()
    assert sum(w.failures for w in writers) > 0, "the kills should have interrupted some requests"
    store = srv.open_store()
    try:
        assert store.check() == []
        for w, n in zip(writers, nodes, strict=True):
            node = store.find_node(n.uuid)
            assert node is not None
            stored = {m["pps"] for m in store.metrics(node["node_id"], 0, 10**7)}
            missing = set(w.acked_metrics) - stored
            assert not missing, f"{len(missing)} acknowledged samples lost"
            incidents = store.list_incidents(node["node_id"], limit=10**6)
            by_key: dict[str, list[int]] = {}
            for inc in incidents:
                by_key.setdefault(inc["incident_key"], []).append(inc["incident_id"])
            assert all(len(ids) == 1 for ids in by_key.values()), "an incident_key was stored twice"
            for key, iid in w.acked_incidents.items():
                assert by_key.get(key) == [iid]
            for iid, digest in w.acked_pcaps.items():
                meta = store.pcap(iid)
                assert meta is not None and meta["sha256"] == digest
                data = (srv.pcap_dir / meta["file_name"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == digest
        on_disk = {p.name for p in srv.pcap_dir.iterdir() if p.is_file()}
        if backend.kind == "postgresql":  # replicas share the directory: an upload's leftovers wait an hour
            on_disk = {n for n in on_disk if not n.startswith(".upload-")}
        assert on_disk == store.pcap_files(), "files on disk and rows in the database disagree"
    finally:
        store.close()
