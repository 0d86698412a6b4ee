"""The Prometheus text renderer, the scrape access rule and the agent's status -> metrics mapping
(pure logic); the output is checked by Debian's promtool, Prometheus' own parser and linter."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from floodwatch.errors import ConfigError
from floodwatch.messages import StatusReply
from floodwatch.prom import agent
from floodwatch.prom.access import read_token, refusal
from floodwatch.prom.text import COUNTER, GAUGE, HISTOGRAM, Exposition, Histogram, escape_label, metric_name


def promtool_ok(text: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus) is not installed")
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_label_values_are_escaped_and_names_sanitised() -> None:
    out = Exposition()
    nasty = 'a"b\\c\nd</script>'
    out.add("floodwatch_test_value", GAUGE, "help with \\ and\nnewline", 1.5, {"node": nasty})
    text = out.render()
    assert 'floodwatch_test_value{node="a\\"b\\\\c\\nd</script>"} 1.5' in text
    assert "# HELP floodwatch_test_value help with \\\\ and\\nnewline" in text
    assert escape_label("plain") == "plain"
    assert metric_name("floodwatch", "my-actor", "9 lives", "total") == "floodwatch_my_actor_9_lives_total"
    assert metric_name("9x") == "_9x"
    promtool_ok(text)


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    h = Histogram(("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 3.0):
        h.observe(v, "/x")
    out = Exposition()
    h.export(out.family("floodwatch_test_seconds", HISTOGRAM, "latency"))
    text = out.render()
    assert 'floodwatch_test_seconds_bucket{route="/x",le="0.1"} 1' in text
    assert 'floodwatch_test_seconds_bucket{route="/x",le="1.0"} 3' in text
    assert 'floodwatch_test_seconds_bucket{route="/x",le="+Inf"} 4' in text
    assert 'floodwatch_test_seconds_sum{route="/x"} 4.05' in text
    assert 'floodwatch_test_seconds_count{route="/x"} 4' in text
    assert h.count("/x") == 4
    promtool_ok(text)


def test_histogram_bounds_are_inclusive() -> None:
    """`le` means <=: a value equal to a bound counts in that bucket; above the last, only in +Inf."""
    h = Histogram((), buckets=(0.1, 1.0))
    for v in (0.1, 1.0, 1.0000001, 0.0):
        h.observe(v)
    out = Exposition()
    h.export(out.family("floodwatch_test_seconds", HISTOGRAM, "latency"))
    text = out.render()
    assert 'floodwatch_test_seconds_bucket{le="0.1"} 2' in text
    assert 'floodwatch_test_seconds_bucket{le="1.0"} 3' in text
    assert 'floodwatch_test_seconds_bucket{le="+Inf"} 4' in text


@pytest.mark.parametrize(("remote", "header", "token", "status"), [
    ("127.0.0.1", None, None, None), ("127.9.9.9", None, None, None), ("::1", None, None, None),
    ("::ffff:127.0.0.1", None, None, None), (None, None, None, None),
    ("198.51.100.7", None, None, 403), ("::ffff:198.51.100.7", None, None, 403), ("fe80::1%eth0", None, None, 403),
    ("not an address", None, None, 403),
    ("198.51.100.7", "Bearer s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret", None),
    ("127.0.0.1", None, "s3cret-s3cret-s3cret", 401), ("127.0.0.1", "Bearer wrong", "s3cret-s3cret-s3cret", 401),
    ("127.0.0.1", "Basic s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret", 401),
])
def test_access_rule(remote: str | None, header: str | None, token: str | None, status: int | None) -> None:
    got = refusal(remote, header, token)
    assert (got[0] if got else None) == status


def test_token_file_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FW_TEST_TOKEN", raising=False)
    assert read_token("", "metrics.token_file", "FW_TEST_TOKEN") is None
    with pytest.raises(ConfigError, match=r"metrics.token_file: cannot read"):
        read_token(str(tmp_path / "missing"), "metrics.token_file", "FW_TEST_TOKEN")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_token(str(short), "metrics.token_file", "FW_TEST_TOKEN")
    monkeypatch.setenv("FW_TEST_TOKEN", "e" * 20)
    assert read_token("", "metrics.token_file", "FW_TEST_TOKEN") == "e" * 20


def test_agent_counters_are_typed_by_the_gauges_the_heartbeat_declares() -> None:
    row = {"name": "reporter", "pid": 42, "state": "running", "restarts": 2, "uptime": 9.5,
           "last_heartbeat": 0.25, "cpu_seconds": 1.5, "rss_bytes": 1000, "health": "api: 401 unauthorized",
           "counters": {"delivered": 7, "outbox_pending": 3, "last_error": "boom \"quoted\"", "ok": True},
           "gauges": ["outbox_pending"]}
    reply = StatusReply(nonce="n", supervisor={"pid": 1, "uptime": 3.0, "ready": True, "reloads": 1,
                                               "bad_control_messages": 0}, actors=[row])
    text = agent.render(reply, "host-1")
    assert "# TYPE floodwatch_reporter_delivered_total counter\nfloodwatch_reporter_delivered_total 7" in text
    assert "# TYPE floodwatch_reporter_outbox_pending gauge\nfloodwatch_reporter_outbox_pending 3" in text
    assert "last_error" not in text and "boom" not in text  # text is never exported
    assert 'floodwatch_actor_up{actor="reporter"} 1' in text
    assert 'floodwatch_actor_state{actor="reporter",state="running"} 1' in text
    assert 'floodwatch_actor_state{actor="reporter",state="backoff"} 0' in text
    assert 'floodwatch_actor_restarts_total{actor="reporter"} 2' in text
    assert 'floodwatch_actor_healthy{actor="reporter"} 0' in text
    assert 'floodwatch_actor_last_heartbeat_age_seconds{actor="reporter"} 0.25' in text
    promtool_ok(text)
    down = agent.render(None, "host-1")
    assert "floodwatch_supervisor_up 0" in down and "floodwatch_actor_up" not in down
    promtool_ok(down)


def test_agent_series_are_capped_per_actor() -> None:
    counters = {f"c{i:04d}": i for i in range(agent.MAX_COUNTERS_PER_ACTOR + 50)}
    row = {"name": "probe", "state": "running", "counters": counters, "gauges": []}
    text = agent.render(StatusReply(nonce="", supervisor={}, actors=[row]), "h")
    assert text.count("# TYPE floodwatch_probe_") == agent.MAX_COUNTERS_PER_ACTOR
    assert COUNTER in text
