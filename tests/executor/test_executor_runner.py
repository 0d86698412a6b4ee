"""The runner: no shell, a clean environment, a timeout, a cap on the output; the ledger on disk."""

from __future__ import annotations

from pathlib import Path

from floodwatch.executor.ledger import Ledger
from floodwatch.executor.runner import Runner


def test_a_command_past_its_timeout_is_killed_and_reported() -> None:
    result = Runner(timeout=0.3, max_output=1000).run(["sleep", "30"])
    assert not result.ok and "timed out" in result.error


def test_output_is_cut_at_the_limit() -> None:
    result = Runner(timeout=10, max_output=100).run(["seq", "100000"])
    assert result.ok
    assert result.output.startswith("1\n2\n") and "[output cut:" in result.output
    assert len(result.output) < 200


def test_no_shell_and_a_clean_environment(monkeypatch: object, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = Runner(timeout=10, max_output=1000).run(["echo", f"x; touch {marker}", "$HOME"])
    assert result.output.strip() == f"x; touch {marker} $HOME"
    assert not marker.exists()
    env = Runner(timeout=10, max_output=10000).run(["env"]).output.split()
    assert sorted(env) == ["LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_missing_program_and_failing_exit_status() -> None:
    assert "not found" in Runner(10, 100).run(["no-such-program-fw"]).error
    result = Runner(10, 100).run(["ls", "/no/such/dir"])
    assert result.returncode != 0 and result.error.startswith("exit status")


def test_the_prefix_goes_first() -> None:
    assert Runner(10, 100, ["env", "FOO=1"]).run(["printenv", "FOO"]).output.strip() == "1"


def test_ledger_survives_reopen_and_keeps_rules(tmp_path: Path) -> None:
    db = Ledger(tmp_path / "l.sqlite3")
    assert db.begin("api", 1, "x", 1.0)
    assert not db.begin("api", 1, "x", 2.0)
    db.finish("api", 1, "applied", "", "out", 3.0)
    db.add_rule("id", ["a"], ["b"], "api", 1, "inc", 1.0, 100.0)
    assert db.next_id("policy") == 1 and db.next_id("policy") == 2
    db.close()
    db = Ledger(tmp_path / "l.sqlite3")
    rec = db.command("api", 1)
    assert rec is not None and rec.status == "applied" and rec.output == "out"
    assert [r.undo for r in db.expired(100.0)] == [["b"]] and db.expired(99.0) == []
    assert db.next_id("policy") == 3
    assert db.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
