"""Notifications with two server processes on one PostgreSQL database (replicas): incidents reach
either, every message is sent once (one process holds a channel's lease at a time), and when the
holder is killed the other process delivers what it left."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import eventually
from tests.pgcluster import PgCluster
from tests.server.fwserver_util import ServerProc, incident_body, pg_backend
from tests.server.notify_setup import Peers, webhook_events

pytestmark = pytest.mark.slow


def test_two_replicas_send_each_message_once_and_survive_the_holders_death(
        peers: Peers, pg_cluster: PgCluster, tmp_path: Path) -> None:
    backend = pg_backend(pg_cluster, tmp_path)
    config = peers.config([c for c in peers.channels() if c["name"] == "hook"])
    shared = ["--config", str(config)]
    a = ServerProc(tmp_path / "a", shared, backend=backend)
    b = ServerProc(tmp_path / "b", shared, backend=backend)
    for srv in (a, b):
        srv.tmp.mkdir()
        srv.start()
    try:
        nodes = [a.add_node(f"edge-{i}") for i in range(8)]
        for i, node in enumerate(nodes):  # half the incidents through each process
            assert (a, b)[i % 2].post("incident", incident_body(), node).status == 201

        eventually(lambda: len(webhook_events(peers, "hook")) >= 8, 30, message="8 opens delivered")
        got = peers.rx.messages("webhook")
        assert len(got) == len(peers.rx.unique("webhook")) == 8, "a message was sent twice"

        db = backend.url.rsplit("/", 1)[1]
        holder = pg_cluster.psql("SELECT holder FROM notify_lease WHERE channel = 'hook'", db=db).strip()
        pid = int(holder.split(":")[1])
        dead, alive = (a, b) if a.proc is not None and a.proc.pid == pid else (b, a)
        assert dead.proc is not None and dead.proc.pid == pid, holder
        dead.kill9()
        for node in nodes[:3]:  # more incidents, through the process left
            assert alive.post("incident", incident_body(), node).status == 201
        eventually(lambda: len(webhook_events(peers, "hook")) >= 11, 30, message="delivered after the kill")
        assert len(peers.rx.messages("webhook")) == len(peers.rx.unique("webhook")) == 11
        assert alive.proc is not None
        assert pg_cluster.psql("SELECT holder FROM notify_lease WHERE channel = 'hook'", db=db).split(":")[1] == \
            str(alive.proc.pid)
        assert pg_cluster.psql("SELECT count(*) FROM notify_outbox WHERE status = 'pending'", db=db).strip() == "0"
    finally:
        for srv in (a, b):
            srv.stop()
    assert peers.rx.errors == []
