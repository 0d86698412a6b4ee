"""Message rendering per kind (pure): a Summary -> the body each service documents.

- webhook: our JSON (docs/notifications.md), signed at send time (sign()).
- pagerduty: Events API v2 (`trigger` with a per-incident `dedup_key`, `resolve` with the same key).
- slack: incoming webhook, `text` (fallback) + Block Kit `blocks`.
- discord: execute webhook, one embed, no mentions parsed.
- teams: a Workflows / incoming webhook `message` with one Adaptive Card attachment.
- telegram: Bot API `sendMessage` with `parse_mode: HTML`.
- email: plain text + HTML alternative.
Text an agent sent is escaped for each markup.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from floodwatch.server.notify.channels import Channel
from floodwatch.server.notify.rules import DIGEST, ESCALATE, OPEN, RESOLVE, TEST
from floodwatch.server.notify.summary import Message, Summary, plain_text, summarize

WEBHOOK_TYPES = {OPEN: "incident.opened", ESCALATE: "incident.escalated", RESOLVE: "incident.resolved",
                 DIGEST: "incidents.digest", TEST: "test"}
PD_SEVERITY = {"low": "info", "medium": "warning", "high": "error", "critical": "critical", "info": "info"}
COLORS = {"low": 0x3B82F6, "medium": 0xF59E0B, "high": 0xEF4444, "critical": 0x991B1B, "info": 0x6B7280}
RESOLVED_COLOR = 0x16A34A


@dataclass(frozen=True)
class HttpMessage:
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MailMessage:
    subject: str
    text: str
    html: str
    message_id: str


def dedup_key(msg: Message) -> str:
    """PagerDuty's alert key: one per incident (per node), the same for trigger, updates and resolve."""
    if msg.incident is None:
        return f"floodwatch-test-{msg.delivery_id}"
    return f"floodwatch-{msg.incident.get('node_uuid')}-{msg.incident.get('incident_id')}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 over b"<timestamp>." + body, keyed with the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def webhook(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    body: dict[str, Any] = {
        "id": msg.delivery_id, "type": WEBHOOK_TYPES[msg.event], "channel": ch.name, "title": s.title,
        "reason": msg.reason, "queued_at": datetime.fromtimestamp(msg.created_at, UTC).isoformat(),
        "link": s.link or None, "text": plain_text(s)}
    if msg.event == DIGEST:
        body["incidents"] = [{"event": i["event"], "reason": i["reason"], "incident": i["incident"]}
                             for i in msg.items]
    elif msg.incident is not None:
        body["incident"] = msg.incident
    return HttpMessage(ch.target, body)


def pagerduty(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    body: dict[str, Any] = {"routing_key": ch.secret, "dedup_key": dedup_key(msg)}
    if msg.event == RESOLVE:
        return HttpMessage(ch.target, {**body, "event_action": "resolve"})
    inc = msg.incident or {}
    details: dict[str, Any] = {k: v for k, v in s.facts}
    details["reason"] = msg.reason
    payload: dict[str, Any] = {
        "summary": s.title[:1024], "source": str(inc.get("node_name") or "floodwatch")[:255],
        "severity": PD_SEVERITY.get(s.severity, "warning"), "component": ", ".join(inc.get("target_ips") or [])[:255]
        or None, "group": str(inc.get("node_name") or "") or None,
        "class": str(inc.get("attack_family") or "") or None, "custom_details": details}
    if inc.get("started_at"):
        payload["timestamp"] = inc["started_at"]
    body.update(event_action="trigger", payload={k: v for k, v in payload.items() if v is not None},
                client="floodwatch")
    if s.link:
        body["client_url"] = s.link
        body["links"] = [{"href": s.link, "text": f"Incident #{inc.get('incident_id')}"}]
    return HttpMessage(ch.target, body)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": s.title[:150], "emoji": False}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"[:2000]}
                                       for k, v in s.facts[:10]]}]
    if s.lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _slack_escape("\n".join(s.lines))[:3000]}})
    if s.link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{s.link}|Open in floodwatch>"}]})
    return HttpMessage(ch.target, {"text": _slack_escape(s.title), "blocks": blocks})


def _discord_escape(text: str) -> str:
    for c in "\\*_~`|>[]":
        text = text.replace(c, "\\" + c)
    return text


def discord(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    color = RESOLVED_COLOR if msg.event == RESOLVE else COLORS.get(s.severity, COLORS["info"])
    embed: dict[str, Any] = {
        "title": _discord_escape(s.title)[:256], "color": color,
        "timestamp": datetime.fromtimestamp(msg.created_at, UTC).isoformat(),
        "fields": [{"name": k[:256], "value": _discord_escape(v)[:1024] or "-", "inline": k not in ("Top sources",
                                                                                               "Targets")}
                   for k, v in s.facts[:25]],
        "footer": {"text": "floodwatch"}}
    if s.lines:
        embed["description"] = _discord_escape("\n".join(s.lines))[:4096]
    if s.link:
        embed["url"] = s.link
    sep = "&" if "?" in ch.target else "?"
    return HttpMessage(ch.target + sep + "wait=true",
                       {"username": "floodwatch", "embeds": [embed], "allowed_mentions": {"parse": []}})


def _teams_escape(text: str) -> str:
    """Adaptive Card markdown has no escapes: break what would make a link or emphasis."""
    return text.replace("](", "] (").replace("**", "* *")


def teams(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": _teams_escape(s.title), "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": "Good" if msg.event == RESOLVE else "Attention"},
        {"type": "FactSet", "facts": [{"title": k, "value": _teams_escape(v)} for k, v in s.facts]}]
    if s.lines:
        body.append({"type": "TextBlock", "text": _teams_escape("\n\n".join(s.lines)), "wrap": True})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}
    if s.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in floodwatch", "url": s.link}]
    return HttpMessage(ch.target, {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]})


def telegram(ch: Channel, msg: Message, s: Summary) -> HttpMessage:
    e = html.escape
    lines = [f"<b>{e(s.title)}</b>", ""] + [f"<b>{e(k)}:</b> {e(v)}" for k, v in s.facts]
    if s.lines:
        lines += [""] + [e(line) for line in s.lines]
    if s.link:
        lines += ["", f'<a href="{e(s.link)}">Open in floodwatch</a>']
    url = f"{ch.target.rstrip('/')}/bot{ch.secret}/sendMessage"
    return HttpMessage(url, {"chat_id": ch.chat_id, "text": "\n".join(lines)[:4096], "parse_mode": "HTML",
                             "link_preview_options": {"is_disabled": True}})


def email(ch: Channel, msg: Message, s: Summary) -> MailMessage:
    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in s.facts)
    extra = "".join(f"<li>{e(line)}</li>" for line in s.lines)
    page = (f"<html><body><h2>{e(s.title)}</h2><table>{rows}</table>"
            + (f"<ul>{extra}</ul>" if extra else "")
            + (f"<p><a href=\"{e(s.link)}\">Open in floodwatch</a></p>" if s.link else "") + "</body></html>")
    return MailMessage(f"[floodwatch] {s.title}", plain_text(s) + "\n", page, f"<{msg.delivery_id}@floodwatch>")


Renderer = Callable[[Channel, Message, Summary], HttpMessage | MailMessage]
RENDERERS: dict[str, Renderer] = {"webhook": webhook, "pagerduty": pagerduty, "slack": slack, "discord": discord,
                                  "teams": teams, "telegram": telegram, "email": email}


def render(ch: Channel, msg: Message, link_base: str) -> HttpMessage | MailMessage:
    out: HttpMessage | MailMessage = RENDERERS[ch.kind](ch, msg, summarize(msg, link_base))
    return out
