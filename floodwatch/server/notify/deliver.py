"""Delivery of one rendered message: HTTP (aiohttp) or SMTP (aiosmtplib), and what the answer means.

An Outcome is `ok`, `retry` (after `retry_after` seconds when the receiver said so: `Retry-After`, or
Telegram's and Discord's `retry_after`) or permanent failure. Receivers' answers are kept short and
every secret (URLs of chat webhooks, bot tokens, keys) is masked before anything is logged or stored.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import aiohttp

from floodwatch.server.notify.channels import Channel
from floodwatch.server.notify.render import HttpMessage, MailMessage, sign

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 3600.0
ANSWER_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    ok: bool
    answer: str  # "HTTP 200: ok", "250 OK", "connection refused", ...
    retry: bool = False
    retry_after: float | None = None


def mask(text: str, ch: Channel) -> str:
    for secret in (ch.secret, ch.password, ch.target if ch.kind in ("slack", "discord", "teams") else ""):
        if secret:
            text = text.replace(secret, "***")
    return text


def tls_context(ch: Channel) -> ssl.SSLContext:
    """Verifying TLS context (system CAs, plus the channel's ca_file); made once per CA file: loading the
    system store takes tens of milliseconds."""
    return _context(ch.ca_file)


@functools.lru_cache(maxsize=32)
def _context(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(ca_file)
    return ctx


def retry_after(headers: Any, body: str, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date) or a JSON retry_after."""
    value = headers.get("Retry-After") if headers is not None else None
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError):
                seconds = None
    if seconds is None:
        try:
            data = json.loads(body)
            raw = data.get("retry_after", (data.get("parameters") or {}).get("retry_after"))
            seconds = float(raw) if raw is not None else None
        except (ValueError, AttributeError, TypeError):
            seconds = None
    return None if seconds is None else min(MAX_RETRY_AFTER, max(0.0, seconds))


def classify(status: int, headers: Any, body: str, now: float, kind: str) -> Outcome:
    answer = f"HTTP {status}: {body.strip()[:ANSWER_CHARS]}"
    if 200 <= status < 300:
        if kind == "telegram" and '"ok":false' in body.replace(" ", ""):
            return Outcome(False, answer)
        return Outcome(True, answer)
    if status in RETRY_STATUSES:
        return Outcome(False, answer, retry=True, retry_after=retry_after(headers, body, now))
    return Outcome(False, answer)


async def post(session: aiohttp.ClientSession, ch: Channel, msg: HttpMessage,
               clock: Callable[[], float] = time.time) -> Outcome:
    body = json.dumps(msg.body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "floodwatch-notify/1", **msg.headers}
    if ch.kind == "webhook":
        ts = int(clock())
        headers.update({"X-Floodwatch-Timestamp": str(ts), "X-Floodwatch-Signature": sign(ch.secret, ts, body),
                        "X-Floodwatch-Delivery": str(msg.body.get("id")),
                        "X-Floodwatch-Event": str(msg.body.get("type"))})
    try:
        async with session.post(msg.url, data=body, headers=headers, ssl=tls_context(ch),
                                allow_redirects=False) as resp:
            text = (await resp.content.read(64 * 1024)).decode("utf-8", "replace")
            return classify(resp.status, resp.headers, mask(text, ch), clock(), ch.kind)
    except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as e:
        return Outcome(False, mask(f"{type(e).__name__}: {e}", ch)[:ANSWER_CHARS], retry=True)


def mail(ch: Channel, msg: MailMessage, now: float) -> EmailMessage:
    from datetime import UTC, datetime

    em = EmailMessage()
    em["Subject"] = msg.subject
    em["From"] = ch.from_addr
    em["To"] = ", ".join(ch.to)
    em["Message-ID"] = msg.message_id
    em["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    em.set_content(msg.text)
    em.add_alternative(msg.html, subtype="html")
    return em


async def send_mail(ch: Channel, msg: MailMessage, timeout: float, clock: Callable[[], float] = time.time) -> Outcome:
    import aiosmtplib

    try:
        _, answer = await aiosmtplib.send(
            mail(ch, msg, clock()), hostname=ch.host, port=ch.port, username=ch.username or None,
            password=ch.password or None, start_tls=ch.starttls, use_tls=ch.tls, tls_context=tls_context(ch),
            timeout=timeout)
        return Outcome(True, mask(str(answer), ch)[:ANSWER_CHARS])
    except aiosmtplib.SMTPResponseException as e:
        text = mask(f"{e.code} {e.message}", ch)[:ANSWER_CHARS]
        return Outcome(False, text, retry=400 <= e.code < 500)
    except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as e:
        return Outcome(False, mask(f"{type(e).__name__}: {e}", ch)[:ANSWER_CHARS], retry=True)


async def deliver(session: aiohttp.ClientSession, ch: Channel, msg: HttpMessage | MailMessage, timeout: float,
                  clock: Callable[[], float] = time.time) -> Outcome:
    if isinstance(msg, MailMessage):
        return await send_mail(ch, msg, timeout, clock)
    return await post(session, ch, msg, clock)
