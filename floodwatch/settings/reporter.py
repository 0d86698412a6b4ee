"""[reporter] config section: where and how the agent reports to the API (docs/reporter.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ReporterSettings:
    enabled: bool = True
    # Base URL of the Agent API; the default is the embedded server (`floodwatch server`).
    url: str = "http://127.0.0.1:8787/api/v1/agent"
    # The node's API key. Prefer api_key_file (must not be readable by group/others) or the
    # FLOODWATCH_API_KEY environment variable; order: env, then file, then this value.
    api_key: str = field(default="", repr=False)
    api_key_file: str = ""
    node_uuid: str = ""  # X-Node-UUID; from the server's `add-node`
    # "flowtriq": the paths the hosted API's own agent uses (part C), which the hosted API must accept
    # and floodwatch's server serves too; "published": the published document's paths (parts A, B).
    dialect: str = "flowtriq"
    heartbeat_interval: float = 30.0  # seconds between POST /heartbeat
    config_interval: float = 60.0  # seconds between GET /config (also at once when an incident opens)
    outbox_path: str = ""  # durable queue (SQLite, 0600); empty: <state_dir>/reporter/outbox.sqlite
    ca_bundle: str = ""  # PEM file of CAs to trust instead of the system store (https only)
    tls_verify: bool = True  # false only for testing: logged as a warning at every start
    connect_timeout: float = 5.0  # seconds to establish a connection
    request_timeout: float = 30.0  # seconds for a whole JSON request
    upload_timeout: float = 600.0  # seconds for a whole pcap upload
    max_in_flight: int = 4  # concurrent requests (one per stream: metrics, acks, each incident)
    backoff_initial: float = 1.0  # first retry delay of a failed delivery (then x2 with jitter)
    backoff_max: float = 120.0  # longest retry delay (Retry-After may ask for more, up to 1 h)
    auth_backoff: float = 60.0  # retry delay after 401/403 (reports are kept, not dead-lettered)
    metrics_batch: int = 300  # samples per POST /metrics when a backlog is delivered
    # While no incident is open, the per-second samples are posted together every this many seconds (as an
    # array; the flowtriq dialect merges them into one sample with `samples`, like Flowtriq's agent, which
    # posts every 5 s); during an incident each goes at once. 0: each sample at once, always.
    metrics_interval: float = 5.0
    outbox_max_metrics: int = 20000  # metric samples kept before older ones are downsampled (~5.5 h)
    max_upload_bytes: int = 100 * 1024 * 1024  # the API's pcap limit; bigger files are dead-lettered
    max_response_bytes: int = 1024 * 1024  # longer answers from the server are refused

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: {self.url!r} is not an http(s) URL")
        if parts.username or parts.password or parts.query:
            raise ValueError("url: must not carry credentials or a query string")
        if self.dialect not in ("published", "flowtriq"):
            raise ValueError(f"dialect: {self.dialect!r} is not \"published\" or \"flowtriq\"")
        for name in ("heartbeat_interval", "config_interval", "connect_timeout", "request_timeout",
                     "upload_timeout", "backoff_initial", "backoff_max", "auth_backoff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if not 0 <= self.metrics_interval <= 300:
            raise ValueError("metrics_interval: must be between 0 and 300 seconds")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max: must be >= backoff_initial")
        for name in ("max_in_flight", "metrics_batch", "max_upload_bytes", "max_response_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.outbox_max_metrics < 16:
            raise ValueError("outbox_max_metrics: must be >= 16")
