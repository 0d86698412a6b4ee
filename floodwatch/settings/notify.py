"""[notify] config section: notification channels of the API server (docs/notifications.md).

    [notify]
    link_base_url = "https://floodwatch.example.com"     # links in messages: <base>/incidents/<id>

    [[notify.channel]]
    name = "ops-slack"
    kind = "slack"
    secret_file = "/etc/floodwatch/slack-url"            # for slack/discord/teams the URL is the secret

Each `[[notify.channel]]` table is checked by floodwatch.server.notify.channels (kinds, keys, filters);
a bad one is a ConfigError naming `notify.channel[N].key`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NotifySettings:
    channel: list[dict[str, Any]] = field(default_factory=list)  # one table per channel
    link_base_url: str = ""  # base of the incident links in messages; empty: messages carry no link
    timeout: float = 10.0  # seconds for one delivery attempt (connect + answer)
    backoff_initial: float = 2.0  # first retry delay after a failed attempt; doubles up to backoff_max
    backoff_max: float = 60.0
    give_up_after: float = 86400.0  # a message still undelivered this long after it was queued is dropped
    retention_days: float = 30.0  # delivered/failed outbox rows are deleted after this

    def validate(self) -> None:
        from floodwatch.server.notify.channels import parse_channels

        for name in ("timeout", "backoff_initial", "backoff_max", "give_up_after", "retention_days"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if self.link_base_url and not self.link_base_url.startswith(("http://", "https://")):
            raise ValueError("link_base_url: must start with http:// or https://")
        parse_channels(self.channel)
