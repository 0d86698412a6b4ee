"""The durable outbox on a real SQLite file: order, restart, dead letters, downsampling, permissions."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from floodwatch.reporter.outbox import ACKS, METRICS, Outbox, incident_stream, merge_samples


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sample(i: int, pps: int = 100) -> dict[str, object]:
    return {"pps": pps, "bps": pps * 8, "tcp_pct": 0.0, "udp_pct": 100.0, "icmp_pct": 0.0,
            "recorded_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z"}


def test_reporter_outbox_streams_in_order_and_independent(tmp_path: Path) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "ob.sqlite", clock=clock)
    a, b = incident_stream("a"), incident_stream("b")
    ob.add("incident", a, {"n": 1}, "open", "a")
    ob.add("incident", a, {"n": 2}, "update", "a")
    ob.add("incident", b, {"n": 3}, "open", "b")
    ob.add_metric(sample(0))
    heads = ob.heads(clock(), set(), 10)
    assert [(h.stream, h.body) for h in heads] == [(a, {"n": 1}), (b, {"n": 3}), (METRICS, sample(0))]
    # a failing stream waits; the others do not
    ob.retry_later(heads[0], 30.0, "boom")
    assert [h.stream for h in ob.heads(clock(), set(), 10)] == [b, METRICS]
    assert [h.stream for h in ob.heads(clock(), {b}, 10)] == [METRICS]
    due = ob.next_due()
    assert due is not None and due <= clock()  # b and metrics are due now
    # streams in flight do not count: the end of their request wakes the delivery loop
    assert ob.next_due({b, METRICS}) == clock() + 30.0 and ob.next_due({a, b, METRICS}) is None
    ob.delivered([heads[1], heads[2]])
    assert ob.next_due() == clock() + 30.0
    clock.t += 31
    (head,) = ob.heads(clock(), set(), 10)
    assert head.body == {"n": 1} and head.attempts == 1
    assert ob.pending == 2


def queue_then_sigkill(path: Path, lines: str, max_metrics: int = 20000) -> None:
    """Run `lines` in a child process with `ob`, an Outbox on `path`; the child then dies by SIGKILL."""
    code = (
        "import os, signal; from floodwatch.reporter.outbox import Outbox, incident_stream\n"
        f"ob = Outbox({str(path)!r}, max_metrics={max_metrics})\n{lines}"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True)
    assert proc.returncode == -9, proc.stderr


def test_reporter_outbox_survives_a_killed_process(tmp_path: Path) -> None:
    """A child process queues reports and dies by SIGKILL right after: all of them are on disk."""
    path = tmp_path / "ob.sqlite"
    queue_then_sigkill(path, "for i in range(50): ob.add('incident', incident_stream('k'), {'i': i}, 'update', 'k')\n")
    ob = Outbox(path)
    assert ob.pending == 50
    got = []
    while ob.pending:
        (head,) = ob.heads(1e12, set(), 1)
        got.append(head.body["i"])
        ob.delivered([head])
    assert got == list(range(50))


def test_reporter_outbox_quiet_samples_survive_a_killed_process(tmp_path: Path) -> None:
    """Quiet samples (held for the metrics interval) are still there after a SIGKILL, in order and
    still held, with the incident's report between them; every commit is synced (FULL)."""
    path = tmp_path / "ob.sqlite"
    queue_then_sigkill(path, "for i in range(20): ob.add_metric({'i': i}, hold=3600.0)\n"
                             "ob.add('incident', incident_stream('k'), {'open': 1}, 'open', 'k')\n"
                             "ob.add_metric({'i': 20}, hold=3600.0)\n")
    ob = Outbox(path)
    assert ob.pending == 22 and ob.held_metrics() == 21
    assert [row.body for row in ob.metrics_batch(100)] == [{"i": i} for i in range(21)]
    ob.add_metric({"i": 21}, hold=3600.0)
    assert ob.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for everything else


def test_reporter_outbox_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "reporter" / "outbox.sqlite"
    ob = Outbox(path)
    ob.add("ack", ACKS, {"command_id": 1})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for p in path.parent.iterdir():  # the database, its WAL and shared-memory files
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_reporter_outbox_dead_letters_keep_the_reason(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite")
    ob.add("ack", ACKS, {"command_id": 7})
    (head,) = ob.heads(1e12, set(), 5)
    ob.dead_letter(head, "server refused the report: 400 (application/json): command_id: unknown")
    assert ob.pending == 0 and ob.dead_letters == 1
    (dead,) = ob.dead_letter_rows()
    assert dead["body"] == {"command_id": 7} and "command_id: unknown" in dead["reason"]
    assert Outbox(tmp_path / "ob.sqlite").dead_letters == 1  # counted across restarts


def test_reporter_outbox_heartbeats_coalesce(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite")
    for up in range(100):
        ob.add_heartbeat({"uptime": up})
    assert ob.pending == 1
    assert ob.heads(1e12, set(), 5)[0].body == {"uptime": 99}


def test_reporter_outbox_incident_ids_are_remembered(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite")
    assert ob.incident_id("k") is None
    ob.set_incident_id("k", 17)
    assert Outbox(tmp_path / "ob.sqlite").incident_id("k") == 17


def test_reporter_merge_samples_says_so() -> None:
    m = merge_samples({**sample(0, 100), "conn_count": 2}, {**sample(1, 300), "conn_count": 4})
    assert m["recorded_at"] == sample(0)["recorded_at"]
    assert m["pps"] == 200 and m["peak_pps"] == 300 and m["samples"] == 2 and m["downsampled"] is True
    m2 = merge_samples(m, sample(2, 500))  # weighted by how many seconds each stands for
    assert m2["samples"] == 3 and m2["pps"] == round((200 * 2 + 500) / 3) and m2["peak_pps"] == 500


def test_reporter_outbox_long_outage_downsamples_metrics_only(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite", max_metrics=100)
    ob.add("incident", incident_stream("k"), {"n": 0}, "open", "k")
    n = 1000
    for i in range(n):
        ob.add_metric(sample(i, pps=i))
        if i % 100 == 0:
            ob.add("incident", incident_stream("k"), {"n": i}, "update", "k")
    assert ob.metric_rows <= 100
    rows = ob.metrics_batch(1000)
    assert len(rows) == ob.metric_rows
    assert sum(int(r.body.get("samples", 1)) for r in rows) == n  # every second is accounted for
    assert rows[0].body["recorded_at"] == sample(0)["recorded_at"] and rows[0].body["downsampled"]
    assert rows[-1].body == sample(n - 1, pps=n - 1)  # the newest are untouched
    times = [r.body["recorded_at"] for r in rows]
    assert times == sorted(times)
    assert max(int(r.body.get("peak_pps", r.body["pps"])) for r in rows) == n - 1  # the peak survives
    assert ob.downsampled == n - len(rows)
    assert ob.pending == len(rows) + 11  # incidents are never dropped
    # rows in flight are never merged away
    first = rows[0].id
    ob.compact_metrics(busy_upto=rows[9].id)
    assert [r.id for r in ob.metrics_batch(10)] == [r.id for r in rows[:10]] and rows[0].id == first


def test_reporter_outbox_a_transaction_holds_many_reports_and_survives_a_kill_after_it(tmp_path: Path) -> None:
    """The events that arrive together go in one transaction (one fsync): a downsampling inside it is part
    of it, everything is on disk once it ends (SIGKILL right after), and an error inside keeps none of it."""
    path = tmp_path / "ob.sqlite"
    queue_then_sigkill(path, "with ob.transaction():\n"
                             "    for i in range(30): ob.add_metric({'i': i, 'pps': i}, hold=3600.0)\n"
                             "    ob.add('incident', incident_stream('k'), {'open': 1}, 'open', 'k')\n",
                       max_metrics=10)
    ob = Outbox(path, max_metrics=10)
    rows = ob.metrics_batch(100)
    assert ob.metric_rows == len(rows) <= 10  # downsampled inside the transaction
    assert sum(int(r.body.get("samples", 1)) for r in rows) == 30 and rows[-1].body == {"i": 29, "pps": 29}
    assert ob.pending == len(rows) + 1
    try:
        with ob.transaction():
            ob.add("incident", incident_stream("k"), {"update": 1}, "update", "k")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert Outbox(path).pending == len(rows) + 1  # nothing of the failed transaction
