"""The reporter's logic: durable outbox, API client, message mapping, remote config (docs/reporter.md)."""
