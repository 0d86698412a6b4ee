"""[collector] config section: network mode, flow export (sFlow, NetFlow v5/v9, IPFIX) from routers.

docs/collector.md describes how to point a router at floodwatch and what each key does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    return host, int(port)


DEFAULT_LISTEN = {"sflow": "0.0.0.0:6343", "netflow": "0.0.0.0:2055", "ipfix": "0.0.0.0:4739"}


@dataclass(frozen=True)
class CollectorSettings:
    enabled: bool = False
    # UDP listen addresses (HOST:PORT) by protocol: sflow, netflow (v5 and v9), ipfix. Any of the flow
    # versions is accepted on the netflow and ipfix ports; a protocol left out is not listened for.
    listen: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LISTEN))
    # Exporters (source addresses of the datagrams) allowed; empty = any. Others are dropped and counted.
    exporters: list[str] = field(default_factory=list)
    # Sampling rate per exporter address, used when the export does not say (v5 without an interval,
    # v9/IPFIX without a sampling option); "default" applies to every other exporter.
    sampling: dict[str, int] = field(default_factory=dict)
    # The protected networks: flows to (inbound) or from (outbound) them are counted, the rest ignored.
    # Empty = every flow counts as inbound traffic.
    networks: list[str] = field(default_factory=list)
    max_sampling_rate: int = 1_000_000  # a larger rate in an export is absurd: records dropped, counted
    max_templates: int = 4096  # v9/IPFIX templates kept (all exporters); the least recently used go first
    template_timeout: float = 1800.0  # seconds a template lives without being refreshed
    pending_sets: int = 256  # data sets kept while their template is unknown (all exporters)
    pending_seconds: float = 30.0  # how long such a set waits for its template
    batch_records: int = 2048  # records per PacketBatch at most
    batch_interval: float = 0.05  # seconds: a partial batch is sent after this long
    frames_per_second: int = 2000  # sFlow raw headers per second to the recorder at most; 0 = none
    recv_buffer: int = 4 << 20  # SO_RCVBUF bytes per socket
    # Read the flow export datagrams of this capture file instead of listening (floodwatch analyze)
    pcap_file: str = ""

    def validate(self) -> None:
        for proto, text in self.listen.items():
            if proto not in DEFAULT_LISTEN:
                raise ValueError(f"listen: unknown protocol {proto!r} (known: {', '.join(DEFAULT_LISTEN)})")
            try:
                _hostport(text)
            except ValueError as e:
                raise ValueError(f"listen: {proto}: {e}") from e
        for net in [*self.exporters, *self.networks]:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"exporters/networks: {net!r} is not an address or prefix") from e
        for key, rate in self.sampling.items():
            if key != "default":
                try:
                    ipaddress.ip_address(key)
                except ValueError as e:
                    raise ValueError(f"sampling: {key!r} is neither an address nor 'default'") from e
            if not isinstance(rate, int) or not 1 <= rate <= self.max_sampling_rate:
                raise ValueError(f"sampling: {key} rate must be an integer 1-{self.max_sampling_rate}")
        for name in ("max_templates", "pending_sets", "batch_records", "max_sampling_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.template_timeout <= 0 or self.pending_seconds < 0 or self.batch_interval <= 0:
            raise ValueError("template_timeout, pending_seconds, batch_interval: must be positive")

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Protocol name -> (host, port) of each enabled listener."""
        return {proto: _hostport(text) for proto, text in self.listen.items()}
