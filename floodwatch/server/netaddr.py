"""HOST:PORT parsing for the server's listen addresses."""

from __future__ import annotations

from floodwatch.server.validate import is_decimal


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8787`, `[::1]:8787` or `:8787` (all addresses) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not is_decimal(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen: {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"listen: {text!r}: write an IPv6 address in brackets, e.g. [::1]:8787")
    return host or "0.0.0.0", int(port)  # noqa: S104 - only when the operator asks for all addresses
