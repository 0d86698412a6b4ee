"""[metrics] config section: the agent's Prometheus endpoint, served by the API server's actor or by a
metrics actor of its own (floodwatch/prom/endpoint.py; docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    # Served by the API server's actor when it runs (one Python process fewer, ~13 MB); false: by a
    # metrics actor of its own (a crash or restart of either then leaves the other serving).
    in_apiserver: bool = True
    listen: str = "127.0.0.1:9108"  # HOST:PORT of GET /metrics; loopback by default
    # With a token (this 0600 file's content, or $FLOODWATCH_METRICS_TOKEN) every scrape needs
    # `Authorization: Bearer <token>`; without one only loopback clients are answered (403 otherwise).
    token_file: str = ""
    status_timeout: float = 2.0  # seconds a scrape waits for the supervisor's status answer

    def validate(self) -> None:
        from floodwatch.server.netaddr import parse_listen

        parse_listen(self.listen)
        if self.status_timeout <= 0:
            raise ValueError("status_timeout: must be > 0")
