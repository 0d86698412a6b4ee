"""Notification channels: `[[notify.channel]]` tables -> frozen, validated Channel objects.

Parsing is pure (no file is read): `parse_channels` checks kinds, keys and filters and raises a
ValueError naming `channel[N].key`, which the config loader turns into `FILE: notify.channel[N].key: ...`.
`load_secrets` reads `secret_file` / `secret_env` (and `password_file` / `password_env` for email) when
the server starts; their values are never logged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from floodwatch.errors import ConfigError

KINDS = ("webhook", "pagerduty", "slack", "discord", "teams", "telegram", "email")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
DEFAULT_URLS = {"pagerduty": "https://events.pagerduty.com/v2/enqueue", "telegram": "https://api.telegram.org"}
URL_IS_SECRET = ("slack", "discord", "teams")  # their webhook URL is the credential: it may come from secret_file
NEEDS_SECRET = ("webhook", "pagerduty", "telegram")  # HMAC key, routing key, bot token
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    url: str = ""  # the receiver (default: the service's own for pagerduty and telegram)
    secret_file: str = ""  # webhook: HMAC key; pagerduty: routing key; telegram: bot token; chat kinds: the URL
    secret_env: str = ""  # the same from an environment variable
    nodes: list[str] = field(default_factory=list)  # only these nodes (name or UUID); empty: all
    min_severity: str = "low"  # only incidents at least this severe
    families: list[str] = field(default_factory=list)  # only these attack families; empty: all
    rate_per_minute: int = 20  # at most this many messages a minute; more pending at once -> one digest
    chat_id: str = ""  # telegram
    host: str = ""  # email: SMTP server
    port: int = 587
    starttls: bool = True  # STARTTLS on a plain connection (port 587)
    tls: bool = False  # implicit TLS from the first byte (port 465)
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    from_addr: str = ""  # the `from` key
    to: list[str] = field(default_factory=list)
    ca_file: str = ""  # extra CA bundle to verify the receiver (a private CA); certificates are always verified
    # filled by load_secrets(), never from the file itself
    secret: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def target(self) -> str:
        """Where messages go: the URL (chat kinds: possibly the secret) or the SMTP host."""
        if self.kind in URL_IS_SECRET and not self.url:
            return self.secret
        return self.url or DEFAULT_URLS.get(self.kind, "")

    def wants(self, node_name: str, node_uuid: str, family: str, severity: str) -> bool:
        """The channel's filters: nodes, families, min_severity."""
        if self.nodes and node_name not in self.nodes and node_uuid not in self.nodes:
            return False
        if self.families and family not in self.families:
            return False
        return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[self.min_severity]


_KEYS = {f.name for f in dataclasses.fields(Channel)} - {"secret", "password", "from_addr"} | {"from"}


def parse_channels(tables: list[dict[str, object]]) -> list[Channel]:
    """Validate every channel table; names must be unique."""
    out: list[Channel] = []
    for i, raw in enumerate(tables):
        ch = parse_channel(raw, f"channel[{i}]")
        if any(c.name == ch.name for c in out):
            raise ValueError(f"channel[{i}].name: {ch.name!r} is used by another channel")
        out.append(ch)
    return out


def parse_channel(raw: dict[str, object], where: str) -> Channel:
    from floodwatch.config import build_section

    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    for key in ("name", "kind"):
        if key not in raw:
            raise ValueError(f"{where}.{key}: required")
    values = {("from_addr" if k == "from" else k): v for k, v in raw.items()}
    try:
        ch: Channel = build_section(Channel, values, where)
    except ConfigError as e:
        raise ValueError(str(e).replace(".from_addr", ".from")) from None
    _check(ch, where)
    return ch


def _check(ch: Channel, where: str) -> None:
    if not NAME_RE.match(ch.name):
        raise ValueError(f"{where}.name: {ch.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    if ch.kind not in KINDS:
        raise ValueError(f"{where}.kind: {ch.kind!r} is not one of {', '.join(KINDS)}")
    if ch.min_severity not in SEVERITY_RANK:
        raise ValueError(f"{where}.min_severity: {ch.min_severity!r} is not one of {', '.join(SEVERITY_RANK)}")
    if ch.rate_per_minute < 1:
        raise ValueError(f"{where}.rate_per_minute: must be >= 1")
    if ch.url and not ch.url.startswith(("http://", "https://")):
        raise ValueError(f"{where}.url: must start with http:// or https://")
    has_secret = bool(ch.secret_file or ch.secret_env)
    if ch.kind in URL_IS_SECRET and not ch.url and not has_secret:
        raise ValueError(f"{where}.url: required for kind {ch.kind} (or put the URL in secret_file)")
    if ch.kind == "webhook" and not ch.url:
        raise ValueError(f"{where}.url: required for kind webhook")
    if ch.kind in NEEDS_SECRET and not has_secret:
        raise ValueError(f"{where}.secret_file: required for kind {ch.kind} (or secret_env)")
    if ch.kind == "telegram" and not ch.chat_id:
        raise ValueError(f"{where}.chat_id: required for kind telegram")
    if ch.kind == "email":
        _check_email(ch, where)


def _check_email(ch: Channel, where: str) -> None:
    if not ch.host:
        raise ValueError(f"{where}.host: required for kind email")
    if not 1 <= ch.port <= 65535:
        raise ValueError(f"{where}.port: must be 1-65535")
    if not ch.from_addr or "@" not in ch.from_addr:
        raise ValueError(f"{where}.from: required for kind email (an address)")
    if not ch.to or any("@" not in a for a in ch.to):
        raise ValueError(f"{where}.to: required for kind email (a list of addresses)")
    if ch.tls and ch.starttls:
        raise ValueError(f"{where}.starttls: cannot be combined with tls = true (implicit TLS)")
    if (ch.password_file or ch.password_env) and not ch.username:
        raise ValueError(f"{where}.username: required when a password is given")


def _read(path: str, where: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def _from_env(name: str, where: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{where}: the environment variable {name} is not set")
    return value


def load_secrets(channels: list[Channel], where: str = "notify") -> list[Channel]:
    """Channels with `secret` and `password` read from their files or the environment."""
    out = []
    for i, ch in enumerate(channels):
        at = f"{where}.channel[{i}]"
        secret = password = ""
        if ch.secret_file:
            secret = _read(ch.secret_file, f"{at}.secret_file")
        elif ch.secret_env:
            secret = _from_env(ch.secret_env, f"{at}.secret_env")
        if ch.password_file:
            password = _read(ch.password_file, f"{at}.password_file")
        elif ch.password_env:
            password = _from_env(ch.password_env, f"{at}.password_env")
        if ch.kind in URL_IS_SECRET and not ch.url and not secret.startswith(("http://", "https://")):
            raise ConfigError(f"{at}.secret_file: must hold the {ch.kind} webhook URL (https://...)")
        out.append(dataclasses.replace(ch, secret=secret, password=password))
    return out
