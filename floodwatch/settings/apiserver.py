"""[apiserver] config section: the embedded Agent API server (docs/server.md).

The same settings drive `floodwatch server` (its flags override them) and the supervised actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class ApiserverSettings:
    enabled: bool = True
    listen: str = "127.0.0.1:8787"  # HOST:PORT ([::1]:PORT for IPv6); the API is under /api/v1/agent/
    db_path: str = ""  # SQLite file; empty: <agent.state_dir>/server.db
    # PostgreSQL instead of SQLite: "postgresql://USER@HOST:PORT/DB" (no password in it); empty: SQLite.
    # The password: this file's first line (0600, or 0640 with a group), else $FLOODWATCH_DB_PASSWORD.
    database: str = ""
    database_password_file: str = ""
    database_pool_size: int = 4  # connections to PostgreSQL per server process
    pcap_dir: str = ""  # uploaded captures (0700); empty: server-pcaps/ beside the database
    # Embedded mode: a node for this host is created at first start and its credentials written here
    # (0600) for the reporter; empty: <agent.state_dir>/server-local-node.json. "-" turns it off.
    local_node_file: str = ""
    local_node_name: str = "local"
    synchronous: str = "FULL"  # SQLite synchronous mode: FULL survives power loss, NORMAL only crashes
    max_body_bytes: int = 1 * MiB  # JSON request bodies (413 beyond)
    max_upload_bytes: int = 100 * MiB  # one pcap upload (413 beyond), as the API says
    pcap_quota_bytes: int = 10 * 1024 * MiB  # all stored captures together (507 beyond)
    max_metrics_batch: int = 1000  # samples in one POST /metrics
    metrics_retention_days: float = 30.0  # samples older than this (by recorded_at) are deleted
    rate_limit: float = 0.0  # requests per second per node; 0: off (429 + Retry-After when exceeded)
    rate_burst: int = 100  # requests a node may send at once before the rate applies
    read_timeout: float = 30.0  # seconds a client may stay silent while sending a body (408 beyond)
    offline_after: float = 90.0  # a node silent for longer is shown offline (3 missed heartbeats)
    # Admin API (/api/v1/admin/): tokens made by `floodwatch server admin-token`, or this file's
    # content / $FLOODWATCH_ADMIN_TOKEN. No token at all: the admin API answers 401 to everything.
    admin_token_file: str = ""
    allow_remote_admin: bool = True  # false: the admin API only answers loopback clients
    access_log: bool = False  # one log line per request (off: counters only)
    # Reverse proxies (CIDRs or addresses) whose X-Forwarded-For is believed: from one of them, the
    # client is the rightmost forwarded address that is not a trusted proxy (server/clientaddr.py).
    # Empty: the header is ignored and the TCP peer is the client. Connection caps stay per TCP peer.
    trusted_proxies: list[str] = field(default_factory=list)
    extra_listen: list[str] = field(default_factory=list)  # more HOST:PORT to serve on
    # TLS: with both, every listen address speaks HTTPS only (TLS 1.2+). The key must not be readable by
    # others (0600, or 0640 with a group such as ssl-cert).
    tls_cert: str = ""  # PEM certificate, its chain after it
    tls_key: str = ""  # PEM private key
    header_timeout: float = 10.0  # seconds a new connection has for its first request head (408 beyond)
    # an idle kept-alive connection, or one slow with its next request head, is closed; longer than the
    # 15 s after which aiohttp clients (the reporter) drop idle connections, so they always close first
    keepalive_timeout: float = 30.0
    max_connections: int = 1000  # open connections in total (503 and closed beyond)
    max_connections_per_address: int = 100  # open connections from one client address (503 beyond)
    # GET /metrics (Prometheus, docs/metrics.md): with a token (this 0600 file's content, or
    # $FLOODWATCH_METRICS_TOKEN) every scrape needs `Authorization: Bearer <token>`; without one only
    # loopback clients are answered. Per-node series cover the most recently seen metrics_max_nodes.
    metrics_endpoint: bool = True
    metrics_token_file: str = ""
    metrics_max_nodes: int = 500

    def validate(self) -> None:
        from floodwatch.server.netaddr import parse_listen

        for item in [self.listen, *self.extra_listen]:
            parse_listen(item)
        if self.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous: must be OFF, NORMAL, FULL or EXTRA")
        for name in ("max_body_bytes", "max_upload_bytes", "pcap_quota_bytes", "max_metrics_batch", "rate_burst",
                     "max_connections", "max_connections_per_address", "metrics_max_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        for name in ("metrics_retention_days", "read_timeout", "offline_after", "header_timeout",
                     "keepalive_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert: tls_cert and tls_key go together (both, or neither for plain HTTP)")
        check_database_url(self.database)
        if self.database_password_file and not self.database:
            raise ValueError("database_password_file: only with database = \"postgresql://...\"")
        if self.database_pool_size < 1:
            raise ValueError("database_pool_size: must be >= 1")
        from floodwatch.server.clientaddr import parse_trusted

        if not isinstance(self.trusted_proxies, list):
            raise ValueError("trusted_proxies: must be a list of CIDRs, e.g. [\"127.0.0.1/32\"]")
        parse_trusted(self.trusted_proxies)
        if self.rate_limit < 0:
            raise ValueError("rate_limit: must be >= 0 (0 turns it off)")


def check_database_url(url: str) -> None:
    """`database`: empty (SQLite) or a postgresql:// URL without a password (ValueError, never echoing it)."""
    if not url:
        return
    from urllib.parse import urlsplit

    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not rest:
        raise ValueError("database: must be postgresql://USER@HOST[:PORT]/DB (empty: SQLite at db_path)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"database: not a valid URL ({e})") from e
    if parts.password is not None:
        raise ValueError("database: no password in the URL; put it in database_password_file or "
                         "$FLOODWATCH_DB_PASSWORD")
    if "password=" in (parts.query or "").lower():
        raise ValueError("database: no password in the URL's parameters; use database_password_file")
    if not parts.path.strip("/") or not (parts.hostname or "host=" in (parts.query or "")):
        raise ValueError("database: must name a host and a database (postgresql://USER@HOST[:PORT]/DB)")
