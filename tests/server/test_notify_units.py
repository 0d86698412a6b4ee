"""Notifications, pure parts and the outbox on a real SQLite file: config errors, when-to-send rules,
the rate limit and digest, rendering per kind, answers' meaning."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from floodwatch.config import config_from_dict
from floodwatch.errors import ConfigError
from floodwatch.server.notify import outbox
from floodwatch.server.notify.channels import Channel, load_secrets, parse_channels
from floodwatch.server.notify.deliver import classify, retry_after
from floodwatch.server.notify.render import render, sign
from floodwatch.server.notify.rules import Event, Pending, backoff, events_for, plan, recipients
from floodwatch.server.notify.summary import Message

HOOK: dict[str, object] = {"name": "hook", "kind": "webhook", "url": "https://rx.example/hook",
                           "secret_env": "FW_TEST_HOOK"}


def channel_error(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"notify": {"channel": [HOOK, table]}}, "srv.toml")
    return str(e.value)


@pytest.mark.parametrize(("table", "key"), [
    ({"name": "x", "kind": "sms"}, "notify.channel[1].kind: 'sms' is not one of"),
    ({"kind": "slack", "url": "https://h"}, "notify.channel[1].name: required"),
    ({"name": "x", "kind": "slack"}, "notify.channel[1].url: required for kind slack"),
    ({"name": "x", "kind": "webhook", "url": "https://h"}, "notify.channel[1].secret_file: required"),
    ({"name": "x", "kind": "pagerduty"}, "notify.channel[1].secret_file: required for kind pagerduty"),
    ({"name": "x", "kind": "telegram", "secret_env": "T"}, "notify.channel[1].chat_id: required"),
    ({"name": "x", "kind": "email", "host": "h", "from": "a@b"}, "notify.channel[1].to: required"),
    ({"name": "x", "kind": "email", "host": "h", "to": ["a@b"]}, "notify.channel[1].from: required"),
    ({"name": "x", "kind": "email", "host": "h", "from": 3, "to": ["a@b"]},
     "notify.channel[1].from: expected a string"),
    ({"name": "x", "kind": "email", "host": "h", "port": "25", "from": "a@b", "to": ["c@d"]},
     "notify.channel[1].port: expected an integer"),
    ({"name": "x", "kind": "slack", "url": "https://h", "colour": "red"}, "notify.channel[1].colour: unknown key"),
    ({"name": "x", "kind": "slack", "url": "ftp://h"}, "notify.channel[1].url: must start with http"),
    ({"name": "x", "kind": "slack", "url": "https://h", "min_severity": "huge"}, "notify.channel[1].min_severity"),
    ({"name": "x", "kind": "slack", "url": "https://h", "rate_per_minute": 0}, "notify.channel[1].rate_per_minute"),
    ({"name": "x", "kind": "slack", "url": "https://h", "nodes": "web-1"}, "notify.channel[1].nodes: expected a list"),
    ({"name": "hook", "kind": "slack", "url": "https://h"}, "notify.channel[1].name: 'hook' is used by another"),
    ({"name": "a b", "kind": "slack", "url": "https://h"}, "notify.channel[1].name:"),
])
def test_a_bad_channel_is_an_error_naming_the_key(table: dict[str, Any], key: str) -> None:
    message = channel_error(table)
    assert message.startswith("srv.toml: ") and key in message, message


def test_secrets_come_from_files_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_TEST_HOOK", "s3cret")
    (tmp_path / "slack").write_text("https://hooks.slack.example/T/B/x\n")
    chans = load_secrets(parse_channels([HOOK, {"name": "s", "kind": "slack", "secret_file": str(tmp_path / "slack")}]))
    assert chans[0].secret == "s3cret" and chans[1].target == "https://hooks.slack.example/T/B/x"
    assert "s3cret" not in repr(chans[0])
    with pytest.raises(ConfigError, match=r"notify.channel\[0\].secret_file: cannot read .*missing"):
        load_secrets(parse_channels([{**HOOK, "secret_file": str(tmp_path / "missing")}]))
    monkeypatch.delenv("FW_TEST_HOOK")
    with pytest.raises(ConfigError, match=r"notify.channel\[0\].secret_env: the environment variable FW_TEST_HOOK"):
        load_secrets(parse_channels([HOOK]))


def inc(**over: Any) -> dict[str, Any]:
    base = {"incident_id": 7, "node_name": "web-1", "node_uuid": "u-1", "status": "active", "severity": "high",
            "attack_family": "udp_flood", "attack_subtype": "dns_amplification", "peak_pps": 120000,
            "peak_bps": 9_000_000, "target_ips": ["198.18.0.1"], "top_src_ips": [{"ip": "198.18.0.9", "count": 5}],
            "source_ip_count": 200, "started_at": "2026-11-28T10:00:00Z", "vectors": [], "updates": 3}
    return {**base, **over}


def test_when_to_send() -> None:
    assert [e.kind for e in events_for(None, inc())] == ["open"]
    assert events_for(inc(), inc(peak_pps=999999)) == [], "an update is not a message"
    assert events_for(inc(), inc(severity="critical")) == [Event("escalate", "severity high -> critical")]
    assert events_for(inc(severity="critical"), inc(severity="high")) == [], "falling severity says nothing"
    vec = [{"family": "udp_flood", "subtype": "ntp_amplification"}]
    assert events_for(inc(), inc(vectors=vec)) == [Event("escalate", "new vector udp_flood/ntp_amplification")]
    assert events_for(inc(vectors=vec), inc(vectors=vec)) == []
    assert [e.kind for e in events_for(inc(), inc(status="resolved"))] == ["resolve"]
    assert events_for(inc(status="resolved"), inc(status="resolved", severity="critical")) == []
    assert [e.kind for e in events_for(None, inc(status="resolved"))] == ["open", "resolve"]


def test_filters_and_resolve_only_to_channels_told() -> None:
    chans = [Channel("all", "slack"), Channel("crit", "slack", min_severity="critical"),
             Channel("web", "slack", nodes=["u-1"]), Channel("db", "slack", nodes=["db-1"]),
             Channel("dns", "slack", families=["dns_flood"])]
    names = [c.name for c in recipients(chans, Event("open", ""), inc(), set())]
    assert names == ["all", "web"]
    assert [c.name for c in recipients(chans, Event("escalate", ""), inc(severity="critical"), {"all"})] == \
        ["all", "crit", "web"]
    assert [c.name for c in recipients(chans, Event("resolve", ""), inc(), {"all", "crit"})] == ["all", "crit"]


def test_rate_limit_and_digest() -> None:
    p = [Pending(i, "open", 0.0) for i in range(1, 6)]
    assert plan([], [], 3, 100.0, True).action == "idle"
    assert plan(p[:2], [], 3, 100.0, True).ids == (1,)
    assert plan(p, [], 3, 100.0, True).ids == (1, 2, 3, 4, 5) and plan(p, [], 3, 100.0, True).action == "digest"
    assert plan(p, [], 3, 100.0, False).action == "send", "PagerDuty waits instead of folding"
    waiting = plan(p[:1], [50.0, 70.0, 90.0], 3, 100.0, True)
    assert (waiting.action, waiting.until) == ("wait", 110.0)
    assert plan(p[:2], [30.0, 39.0, 99.0], 3, 100.0, True).action == "send", "sends older than a minute are free"
    assert plan([Pending(1, "open", 104.0)], [], 3, 100.0, True) .until == 104.0, "a retry waits its backoff"
    assert [backoff(n, 2, 60) for n in (1, 2, 3, 6, 9)] == [2, 4, 8, 60, 60]


def msg(event: str = "open", incident: dict[str, Any] | None = None, items: list[Any] | None = None) -> Message:
    return Message("d-1", event, "severity high -> critical" if event == "escalate" else event,
                   inc() if incident is None and event != "digest" else incident, items or [], 1_700_000_000.0, "c")


def test_rendering_escapes_what_agents_sent() -> None:
    evil = inc(attack_subtype="<!channel>**@everyone**</b><script>", node_name="web-1")
    slack = render(Channel("s", "slack", url="https://s"), msg(incident=evil), "").body  # type: ignore[union-attr]
    mrkdwn = json.dumps([slack["text"], slack["blocks"][1:]])  # the header block is plain_text: never parsed
    assert "<!channel>" not in mrkdwn and "&lt;!channel&gt;" in mrkdwn
    tg = render(Channel("t", "telegram", chat_id="1", secret="TOKEN"), msg(incident=evil), "")
    assert tg.url == "https://api.telegram.org/botTOKEN/sendMessage"  # type: ignore[union-attr]
    assert "<script>" not in tg.body["text"] and "&lt;script&gt;" in tg.body["text"]  # type: ignore[union-attr]
    discord = render(Channel("d", "discord", url="https://d/x"), msg(incident=evil), "").body  # type: ignore[union-attr]
    attack = next(f["value"] for f in discord["embeds"][0]["fields"] if f["name"] == "Attack")
    assert discord["allowed_mentions"] == {"parse": []} and "\\*\\*@everyone\\*\\*" in attack
    mail = render(Channel("m", "email", from_addr="a@b", to=["c@d"]), msg(incident=evil), "https://fw")
    assert "<script>" not in mail.html and "https://fw/incidents/7" in mail.text  # type: ignore[union-attr]


def test_pagerduty_pairs_trigger_and_resolve() -> None:
    ch = Channel("pd", "pagerduty", secret="R" * 32)
    trigger = render(ch, msg(), "https://fw").body  # type: ignore[union-attr]
    escalate = render(ch, msg("escalate", inc(severity="critical")), "https://fw").body  # type: ignore[union-attr]
    resolve = render(ch, msg("resolve", inc(status="resolved")), "https://fw").body  # type: ignore[union-attr]
    assert trigger["dedup_key"] == escalate["dedup_key"] == resolve["dedup_key"] == "floodwatch-u-1-7"
    assert trigger["payload"]["severity"] == "error" and escalate["payload"]["severity"] == "critical"
    assert resolve == {"routing_key": "R" * 32, "dedup_key": "floodwatch-u-1-7", "event_action": "resolve"}


def test_webhook_signature_scheme() -> None:
    body = b'{"id":"d-1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1_700_000_000, body) == "v1=" + expected
    assert sign("k", 1_700_000_001, body) != sign("k", 1_700_000_000, body), "the timestamp is signed"


def test_resolve_and_digest_summaries() -> None:
    done = inc(status="resolved", ended_at="2026-11-28T10:04:12Z")
    body = render(Channel("w", "webhook", url="https://w", secret="k"), msg("resolve", done), "").body  # type: ignore[union-attr]
    assert body["title"] == "DDoS attack on web-1 resolved after 4m12s" and "Totals: 200 sources" in body["text"]
    items = [{"event": "open", "reason": "opened", "incident": inc(node_name=f"n{i}", incident_id=i)}
             for i in range(37)] + [{"event": "resolve", "reason": "", "incident": inc(incident_id=99)}]
    digest = render(Channel("w", "webhook", url="https://w", secret="k"), msg("digest", items=items), "").body  # type: ignore[union-attr]
    assert digest["title"] == "37 nodes under attack" and len(digest["incidents"]) == 38
    assert "... and 28 more" in digest["text"]


def test_what_answers_mean() -> None:
    assert classify(200, {}, "ok", 0, "slack").ok
    assert not classify(200, {}, '{"ok": false}', 0, "telegram").ok
    gone = classify(404, {}, "no_service", 0, "slack")
    assert not gone.ok and not gone.retry
    limited = classify(429, {"Retry-After": "7"}, "", 0, "slack")
    assert limited.retry and limited.retry_after == 7
    assert classify(500, {}, "", 0, "teams").retry
    assert retry_after({}, '{"ok":false,"parameters":{"retry_after":3}}', 0) == 3
    assert retry_after({}, '{"retry_after": 1.5, "global": false}', 0) == 1.5
    assert retry_after({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, "", 40.0) == 60
    assert retry_after({"Retry-After": "999999"}, "", 0) == 3600


def test_outbox_rows_are_written_with_the_incident(any_store: Any) -> None:
    store = any_store
    outbox.init(store)
    chans = [Channel("all", "webhook"), Channel("crit", "webhook", min_severity="critical")]
    def queue(s: Any, i: int, before: dict[str, Any] | None) -> None:
        outbox.queue_incident_change(s, chans, i, before, 1000.0)

    store.incident_hooks.append(queue)
    node = store.add_node("web-1", "u-1", "h", 0)["node_id"]

    def rows() -> list[tuple[str, str, str]]:
        return [tuple(r) for r in store.execute("SELECT channel, event, status FROM notify_outbox ORDER BY id")]

    iid, _ = store.upsert_incident(node, {"incident_key": "k", "attack_family": "udp_flood", "severity": "high"}, 1.0)
    store.upsert_incident(node, {"incident_key": "k", "attack_family": "udp_flood", "severity": "high"}, 2.0)
    store.upsert_incident(node, {"incident_id": iid, "peak_pps": 5}, 3.0)
    assert rows() == [("all", "open", "pending")], "a retried open or a plain update queues nothing"
    store.upsert_incident(node, {"incident_id": iid, "severity": "critical"}, 4.0)
    store.upsert_incident(node, {"incident_id": iid, "status": "resolved", "ended_at": 9.0}, 5.0)
    assert [r[:2] for r in rows()] == [("all", "open"), ("all", "escalate"), ("crit", "escalate"),
                                       ("all", "resolve"), ("crit", "resolve")]
    step, first = outbox.next_step(store, Channel("all", "webhook", rate_per_minute=2), 1000.0, True)
    assert step.action == "send" and first is not None and first.event == "digest" and len(first.items) == 3
    assert [r[2] for r in rows() if r[0] == "all"] == ["folded"] * 3 + ["pending"]
    outbox.mark_retry(store, first.delivery_id, 1030.0, "HTTP 503")
    step, _ = outbox.next_step(store, Channel("all", "webhook", rate_per_minute=2), 1000.0, True)
    assert (step.action, step.until) == ("wait", 1030.0)
    outbox.mark_sent(store, first.delivery_id, 1031.0, "HTTP 200")
    status = {r["channel"]: r for r in outbox.channel_status(store)}
    assert status["all"]["sent"] == 1 and status["all"]["folded"] == 3 and status["crit"]["pending"] == 2
    assert status["all"]["last_sent_at"].startswith("1970-01-01T00:17:11") and status["all"]["last_error"] is None


def test_a_channel_lease_has_one_holder_until_it_expires_or_its_holder_dies(any_store: Any) -> None:
    store = any_store
    outbox.init(store)
    dead: set[str] = set()
    a, b = (outbox.Lease(name, 30.0, 5.0, dead.__contains__) for name in ("host:1:a", "host:2:b"))
    with store.transaction():
        assert outbox.hold(store, "hook", a, 1000.0) and outbox.hold(store, "hook", a, 1010.0)  # renewed
        assert not outbox.hold(store, "hook", b, 1020.0) and outbox.hold(store, "other", b, 1020.0)
        assert outbox.hold(store, "hook", b, 1041.0)  # a's lease ran out at 1040
        assert not outbox.hold(store, "hook", a, 1042.0)
        dead.add("host:2:b")  # b died (on this host): a takes the channel at once
        assert outbox.hold(store, "hook", a, 1043.0)
    dead.clear()  # b again, restarted
    outbox.release(store, "hook", "host:1:a")
    assert outbox.hold(store, "hook", b, 1044.0)
    step, msg = outbox.next_step(store, Channel("hook", "webhook"), 1045.0, True, a)
    assert (step.action, step.until, msg) == ("wait", 1050.0, None)  # not the holder: looks again later
