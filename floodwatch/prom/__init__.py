"""Prometheus exposition for the server and the agent (docs/metrics.md lists every metric)."""
