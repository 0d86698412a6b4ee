"""`floodwatch server notify test|status`, and a server refusing to start on a bad channel config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from floodwatch import tomlw
from tests.helpers import PYTHON, REPO
from tests.server.fwserver_util import cli
from tests.server.notify_setup import Peers


def test_notify_test_prints_the_receivers_answer(peers: Peers) -> None:
    config = str(peers.config())
    hook = cli("notify", "test", "hook", "--config", config)
    assert hook.stdout.startswith("hook (webhook): delivered: HTTP 200: {\"received\": \"test-")
    assert [g.body["type"] for g in peers.rx.messages("webhook")] == ["test"]
    pd = cli("notify", "test", "pd", "--config", config).stdout.splitlines()
    assert len(pd) == 2 and all('"status": "success"' in line for line in pd), "a trigger, then its resolve"
    assert [g.body["event_action"] for g in peers.rx.messages("pagerduty")] == ["trigger", "resolve"]
    tg = cli("notify", "test", "tg", "--config", config).stdout
    assert '"ok": true' in tg and peers.bot_token not in tg
    mail = cli("notify", "test", "mail", "--config", config).stdout
    assert "delivered" in mail and "Message accepted for delivery" in mail and len(peers.smtp.mails) == 1
    assert peers.rx.errors == []


def test_notify_test_fails_loudly(peers: Peers) -> None:
    gone = [{"name": "gone", "kind": "slack", "url": f"{peers.rx.base}/nothing-here"}]
    proc = cli("notify", "test", "gone", "--config", str(peers.config(gone)), check=False)
    assert proc.returncode == 1 and "gone (slack): FAILED: HTTP 404" in proc.stdout
    unknown = cli("notify", "test", "nope", "--config", str(peers.config(gone)), check=False)
    assert unknown.returncode == 1 and "no channel 'nope'" in unknown.stderr


def test_server_refuses_a_bad_channel_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(tomlw.dumps({"notify": {"channel": [{"name": "ops", "kind": "pager"}]}}))
    proc = subprocess.run([PYTHON, "-m", "floodwatch.server", "--config", str(bad), "--db", str(tmp_path / "s.db")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "notify.channel[0].kind: 'pager' is not one of" in proc.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(tomlw.dumps({"notify": {"channel": [
        {"name": "pd", "kind": "pagerduty", "secret_file": str(tmp_path / "no-such-key")}]}}))
    proc = subprocess.run([PYTHON, "-m", "floodwatch.server", "--config", str(missing), "--db",
                           str(tmp_path / "s.db")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "notify.channel[0].secret_file: cannot read" in proc.stderr
