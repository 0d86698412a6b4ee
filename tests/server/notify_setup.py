"""Config and peers for the notification tests: a receiver, an SMTP server, and a server config with
one channel of each kind (plus filtered ones) pointing at them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from floodwatch import tomlw
from tests.server.notify_peers import Receiver, SmtpServer

LINK_BASE = "https://fw.example.test"


class Peers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.webhook_secret = secrets.token_hex(16)
        self.routing_key = secrets.token_hex(16)  # 32 characters, like PagerDuty's integration keys
        self.bot_token = f"123456:{secrets.token_urlsafe(24)}"
        self.smtp_user, self.smtp_password = "alerts", secrets.token_urlsafe(12)
        self.rx = Receiver(self.webhook_secret, self.routing_key, self.bot_token).start()
        self.smtp = SmtpServer(tmp, self.smtp_user, self.smtp_password).start()
        self.slack_url = f"{self.rx.base}/slack/T000/B000/{secrets.token_hex(12)}"

    def secrets(self) -> list[str]:
        return [self.webhook_secret, self.routing_key, self.bot_token, self.smtp_password, self.slack_url]

    def stop(self) -> None:
        self.rx.stop()
        self.smtp.stop()

    def secret_file(self, name: str, value: str) -> str:
        path = self.tmp / f"secret-{name}"
        path.write_text(value + "\n")
        os.chmod(path, 0o600)
        return str(path)

    def channels(self) -> list[dict[str, Any]]:
        rx = self.rx.base
        return [
            {"name": "hook", "kind": "webhook", "url": f"{rx}/webhook",
             "secret_file": self.secret_file("hook", self.webhook_secret)},
            {"name": "pd", "kind": "pagerduty", "url": f"{rx}/pagerduty/v2/enqueue",
             "secret_file": self.secret_file("pd", self.routing_key)},
            {"name": "chat-slack", "kind": "slack", "secret_file": self.secret_file("slack", self.slack_url)},
            {"name": "chat-discord", "kind": "discord", "url": f"{rx}/discord/1234/abcd"},
            {"name": "chat-teams", "kind": "teams", "url": f"{rx}/teams/workflows/xyz"},
            {"name": "tg", "kind": "telegram", "url": f"{rx}/telegram", "chat_id": "-100200300",
             "secret_file": self.secret_file("tg", self.bot_token)},
            {"name": "mail", "kind": "email", "host": "127.0.0.1", "port": self.smtp.port, "starttls": True,
             "username": self.smtp_user, "password_file": self.secret_file("smtp", self.smtp_password),
             "from": "floodwatch@example.test", "to": ["noc@example.test"], "ca_file": str(self.smtp.cert)},
            {"name": "crit-only", "kind": "webhook", "url": f"{rx}/webhook", "min_severity": "critical",
             "secret_file": self.secret_file("hook", self.webhook_secret)},
            {"name": "other-node", "kind": "webhook", "url": f"{rx}/webhook", "nodes": ["nobody"],
             "secret_file": self.secret_file("hook", self.webhook_secret)},
            {"name": "dns-only", "kind": "webhook", "url": f"{rx}/webhook", "families": ["dns_flood"],
             "secret_file": self.secret_file("hook", self.webhook_secret)},
        ]

    def config(self, channels: list[dict[str, Any]] | None = None, **notify: Any) -> Path:
        section = {"link_base_url": LINK_BASE, "backoff_initial": 0.2, "backoff_max": 1.0, "timeout": 30.0,
                   **notify, "channel": self.channels() if channels is None else channels}
        path = self.tmp / f"server-{secrets.token_hex(3)}.toml"
        path.write_text(tomlw.dumps({"agent": {"state_dir": str(self.tmp / "state")}, "notify": section}))
        return path


def webhook_events(peers: Peers, channel: str) -> list[str]:
    """The types the webhook receiver accepted for `channel`, once per delivery id, in order."""
    seen: dict[str, str] = {}
    for g in peers.rx.messages("webhook"):
        if g.body["channel"] == channel:
            seen.setdefault(g.key, g.body["type"])
    return list(seen.values())
