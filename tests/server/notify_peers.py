"""Real local receivers for the notification tests: an aiohttp server that checks each service's
documented body shape (and the webhook signature), and an SMTP server (aiosmtpd) with STARTTLS + AUTH.

Hosted services are replaced by these, nothing else: the server under test sends real HTTP and SMTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMsg
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers import free_port

WEBHOOK_TYPES = {"incident.opened", "incident.escalated", "incident.resolved", "incidents.digest", "test"}
SLACK_BLOCKS = {"header", "section", "context", "actions", "divider", "image", "rich_text"}
TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler",
                 "blockquote", "span"}
PD_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Got:
    kind: str
    body: dict[str, Any]
    headers: dict[str, str]
    key: str  # what identifies the message for dedup (delivery id, dedup_key + action, ...)
    at: float


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """One aiohttp app with a route per kind. `fail[kind]` is a list of Replies served (and removed)
    before the real answer; `hold[kind]` makes it accept a message and then never answer."""

    def __init__(self, webhook_secret: str, routing_key: str, bot_token: str) -> None:
        self.webhook_secret, self.routing_key, self.bot_token = webhook_secret, routing_key, bot_token
        self.got: list[Got] = []
        self.attempts: list[tuple[str, float, int]] = []  # (kind, time, status answered)
        self.errors: list[str] = []
        self.fail: dict[str, list[Reply]] = {}
        self.hold: set[str] = set()
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handler("webhook", self._webhook))
        app.router.add_post("/slack/{rest:.*}", self._handler("slack", self._slack))
        app.router.add_post("/discord/{rest:.*}", self._handler("discord", self._discord))
        app.router.add_post("/teams/{rest:.*}", self._handler("teams", self._teams))
        app.router.add_post("/pagerduty/v2/enqueue", self._handler("pagerduty", self._pagerduty))
        app.router.add_post("/telegram/bot{token}/sendMessage", self._handler("telegram", self._telegram))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        self.hold.clear()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- what the tests read -----------------------------------------------------------------------
    def messages(self, kind: str | None = None) -> list[Got]:
        with self.lock:
            return [g for g in self.got if kind is None or g.kind == kind]

    def unique(self, kind: str) -> dict[str, Got]:
        """Messages by their key: a redelivery of the same message counts once."""
        return {g.key: g for g in self.messages(kind)}

    # -- the routes --------------------------------------------------------------------------------
    def _handler(self, kind: str, check: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            with self.lock:
                scripted = self.fail.get(kind, [])
                reply = scripted.pop(0) if scripted else None
            if reply is not None:
                self.attempts.append((kind, time.time(), reply.status))
                return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
            try:
                body = json.loads(raw)
                key, answer = check(request, raw, body)
            except (AssertionError, ValueError, KeyError, TypeError) as e:
                self.errors.append(f"{kind}: {e!r}")
                self.attempts.append((kind, time.time(), 400))
                return web.Response(status=400, text=f"bad request: {e}")
            with self.lock:
                self.got.append(Got(kind, body, dict(request.headers), key, time.time()))
            self.attempts.append((kind, time.time(), answer.status))
            while kind in self.hold:  # accepted, not answered until the test releases it
                await asyncio.sleep(0.05)
            return answer
        return handle

    def _webhook(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        ts = request.headers["X-Floodwatch-Timestamp"]
        assert abs(time.time() - int(ts)) <= 300, "timestamp too old: a replay"
        mac = hmac.new(self.webhook_secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["X-Floodwatch-Signature"], "v1=" + mac), "bad signature"
        assert request.headers["X-Floodwatch-Delivery"] == body["id"]
        assert body["type"] in WEBHOOK_TYPES and request.headers["X-Floodwatch-Event"] == body["type"]
        assert isinstance(body["title"], str) and body["title"]
        return body["id"], web.json_response({"received": body["id"]})

    def _slack(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        assert isinstance(body["text"], str) and body["text"]
        assert isinstance(body["blocks"], list) and 0 < len(body["blocks"]) <= 50
        for b in body["blocks"]:
            assert b["type"] in SLACK_BLOCKS, b["type"]
            if b["type"] == "header":
                assert b["text"]["type"] == "plain_text" and len(b["text"]["text"]) <= 150
            if b["type"] == "section":
                assert "text" in b or "fields" in b
                for f in b.get("fields", []):
                    assert f["type"] in ("mrkdwn", "plain_text") and len(f["text"]) <= 2000
                assert len(b.get("fields", [])) <= 10
            if b["type"] == "context":
                assert 0 < len(b["elements"]) <= 10
        return hashlib.sha256(raw).hexdigest(), web.Response(text="ok")

    def _discord(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        embeds = body.get("embeds") or []
        assert body.get("content") or embeds, "neither content nor embeds"
        assert len(embeds) <= 10
        total = 0
        for e in embeds:
            assert len(e.get("title", "")) <= 256 and len(e.get("description", "")) <= 4096
            assert len(e.get("fields", [])) <= 25 and isinstance(e.get("color", 0), int)
            for f in e.get("fields", []):
                assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
                total += len(f["name"]) + len(f["value"])
            total += len(e.get("title", "")) + len(e.get("description", ""))
        assert total <= 6000
        key = hashlib.sha256(raw).hexdigest()
        if request.query.get("wait") == "true":
            return key, web.json_response({"id": str(len(self.got) + 1), "type": 0, "embeds": embeds})
        return key, web.Response(status=204)

    def _teams(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        assert body["type"] == "message"
        att = body["attachments"]
        assert len(att) >= 1 and att[0]["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = att[0]["content"]
        assert card["type"] == "AdaptiveCard" and isinstance(card["version"], str) and card["body"]
        for item in card["body"]:
            assert item["type"] in ("TextBlock", "FactSet", "ColumnSet", "Container")
        return hashlib.sha256(raw).hexdigest(), web.Response(status=202)

    def _pagerduty(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        assert body["routing_key"] == self.routing_key, "unknown routing key"
        action = body["event_action"]
        assert action in ("trigger", "acknowledge", "resolve")
        assert 0 < len(body["dedup_key"]) <= 255
        if action == "trigger":
            p = body["payload"]
            assert 0 < len(p["summary"]) <= 1024 and p["source"] and p["severity"] in PD_SEVERITIES
        key = f"{body['dedup_key']}:{action}:{json.dumps(body.get('payload', {}).get('severity'))}" \
            f":{body.get('payload', {}).get('summary')}"
        return key, web.json_response({"status": "success", "message": "Event processed",
                                       "dedup_key": body["dedup_key"]}, status=202)

    def _telegram(self, request: web.Request, raw: bytes, body: dict[str, Any]) -> tuple[str, web.Response]:
        assert request.match_info["token"] == self.bot_token, "unknown bot token"
        assert body["chat_id"] and 0 < len(body["text"]) <= 4096 and body.get("parse_mode") == "HTML"
        tags = _tags(body["text"])
        assert tags <= TELEGRAM_TAGS, f"unsupported tags {tags - TELEGRAM_TAGS}"
        n = len(self.got) + 1
        return hashlib.sha256(raw).hexdigest(), web.json_response(
            {"ok": True, "result": {"message_id": n, "date": int(time.time()), "chat": {"id": body["chat_id"]},
                                    "text": body["text"]}})


class _TagParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1


def _tags(text: str) -> set[str]:
    p = _TagParser()
    p.feed(text)
    p.close()
    assert p.depth == 0, "unbalanced tags"
    return p.tags


# -- SMTP ---------------------------------------------------------------------------------------------
def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made now with openssl (the client is told to trust it: ca_file)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


class SmtpServer:
    """aiosmtpd on a free loopback port: STARTTLS required, AUTH (PLAIN/LOGIN) required after it."""

    def __init__(self, directory: Path, user: str, password: str) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.cert, key = self_signed_cert(directory)
        self.mails: list[EmailMsg] = []
        self.auth_failures = 0
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, key)

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
            if not ok:
                self.auth_failures += 1
            return AuthResult(success=ok)

        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                assert session.ssl is not None, "mail sent without TLS"
                outer.mails.append(message_from_bytes(envelope.content))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     require_starttls=True, auth_required=True, auth_require_tls=True,
                                     authenticator=authenticator, ready_timeout=10)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def unique(self) -> dict[str, EmailMsg]:
        return {str(m["Message-ID"]): m for m in self.mails}
