"""`floodwatch command check` (exit 0 and the argv, or exit 1 and the reason), crash and reboot recovery."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from floodwatch.config import load_config
from floodwatch.executor.core import DISABLED, Executor, facts_source
from floodwatch.executor.ledger import Ledger
from floodwatch.executor.runner import Runner
from floodwatch.settings.executor import ExecutorSettings
from tests.helpers import PYTHON, REPO


def check(*args: str, config: Path | None = None, module: str = "floodwatch.executor.cli") -> tuple[int, str, str]:
    env = dict(os.environ)
    if config is not None:
        env["FLOODWATCH_CONFIG"] = str(config)
    argv = [PYTHON, "-m", module, *(["command"] if module == "floodwatch.cli" else []), "check", *args]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_check_prints_the_argv_or_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "fw.toml"
    config.write_text('[executor]\niptables_chains = ["FORWARD"]\n')
    rc, out, _ = check("iptables -I FORWARD -s 198.51.100.1 -j DROP", config=config)
    assert rc == 0
    assert json.loads(out) == ["iptables", "-t", "filter", "-I", "FORWARD", "-s", "198.51.100.1", "-j", "DROP"]
    rc, out, _ = check("iptables -I INPUT -s 198.51.100.1 -j DROP", config=config)
    assert rc == 1 and "chain 'INPUT' is not allowed" in out
    rc, out, _ = check("iptables -F; rm -rf /", config=config)
    assert rc == 1 and "shell metacharacters" in out


def test_check_through_the_main_cli_and_a_bad_config(tmp_path: Path) -> None:
    rc, out, _ = check("sysctl -w net.ipv4.tcp_syncookies=1", module="floodwatch.cli")
    assert rc == 0 and json.loads(out) == ["sysctl", "-w", "net.ipv4.tcp_syncookies=1"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[executor]\nmax_rules = -4\n")
    rc, _, err = check("sysctl -w net.ipv4.tcp_syncookies=1", "--config", str(bad))
    assert rc == 2 and "max_rules" in err


def test_a_command_interrupted_by_a_crash_is_failed_not_rerun(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.begin("api", 5, "iptables -I INPUT -s 198.51.100.1 -j DROP", 1.0)  # then the process died
    ledger.close()
    s = ExecutorSettings()
    ex = Executor(s, Ledger(tmp_path / "l.sqlite3"), Runner(s.timeout, s.max_output_bytes))
    [out] = ex.recover()
    assert out.status == "failed" and "interrupted" in out.error
    again = ex.handle("api", 5, "iptables -I INPUT -s 198.51.100.1 -j DROP")
    assert again.replayed and again.status == "failed"
    assert ex.recover() == []


def test_rules_are_forgotten_after_a_reboot(tmp_path: Path) -> None:
    s = ExecutorSettings()
    ex = Executor(s, Ledger(tmp_path / "l.sqlite3"), Runner(s.timeout, s.max_output_bytes))
    ex.ledger.add_rule("x", ["a"], ["b"], "api", 1, "", 1.0, None)
    assert ex.forget_after_reboot("boot-1") == 0
    assert ex.forget_after_reboot("boot-1") == 0 and ex.ledger.count_rules() == 1
    assert ex.forget_after_reboot("boot-2") == 1 and ex.ledger.count_rules() == 0


def test_check_gives_the_executors_verdict_and_reason_with_this_hosts_facts(tmp_path: Path) -> None:
    config = tmp_path / "fw.toml"
    config.write_text('[reporter]\nurl = "http://198.51.100.80:8787/api/v1/agent"\n[executor]\ndry_run = true\n')
    settings = load_config(config).executor
    with socket.socket() as service:  # a local service: no rule may drop all of its clients
        service.bind(("0.0.0.0", 0))
        service.listen()
        port = service.getsockname()[1]
        ex = Executor(settings, Ledger(tmp_path / "l.sqlite3"), Runner(5.0, 1 << 20),
                      facts=facts_source(settings, Runner(5.0, 1 << 20), "http://198.51.100.80:8787/api/v1/agent"))
        cases = {
            "iptables -I INPUT -p tcp --sport 0:65535 -j DROP": "source port 0:65535",
            f"iptables -I INPUT -p tcp --dport {port} -j DROP": f"port {port}, where a local service listens",
            "iptables -I INPUT -s 198.51.100.80 -j DROP": "the API server",
            "ip6tables -I INPUT -s ::ffff:127.0.0.1 -j DROP": "loopback",
            "sysctl -w net.ipv4.icmp_ratelimit=0": "would weaken",
            "iptables -I INPUT -s 198.51.100.7 -j DROP": "",
        }
        for i, (command, reason) in enumerate(cases.items()):
            rc, out, _ = check(command, config=config)
            outcome = ex.handle("api", i + 1, command)
            if reason:
                assert outcome.status == "rejected" and reason in outcome.error, outcome
                assert rc == 1 and out.strip() == f"rejected: {outcome.error}"
            else:
                assert outcome.status == "applied" and rc == 0, (outcome, out)


def test_a_disabled_executor_records_audits_and_counts_each_refusal(tmp_path: Path) -> None:
    s = ExecutorSettings(enabled=False)
    audit = tmp_path / "audit.jsonl"
    ex = Executor(s, Ledger(tmp_path / "l.sqlite3", audit), Runner(s.timeout, s.max_output_bytes), clock=lambda: 5.0)
    out = ex.handle("api", 3, "iptables -I INPUT -s 198.51.100.1 -j DROP")
    assert (out.status, out.error) == ("rejected", DISABLED) and not out.replayed
    assert ex.counters["rejected"] == 1 and ex.ledger.count_rules() == 0
    rec = ex.ledger.command("api", 3)
    assert rec is not None and (rec.status, rec.error) == ("rejected", DISABLED)
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["event"], r["status"], r["detail"]) for r in rows] == [("command", "rejected", DISABLED)]
    again = ex.handle("api", 3, "iptables -I INPUT -s 198.51.100.1 -j DROP")
    assert again.replayed and again.status == "rejected" and ex.counters["replayed"] == 1
