"""[aggregator] config section (documented in docs/aggregator.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from floodwatch.aggregate.budget import estimate_bytes


@dataclass(frozen=True)
class AggregatorSettings:
    enabled: bool = True
    window: float = 0.1  # seconds of stream time per TrafficWindow; 1 / window must be a whole number
    # a window is published once stream time is this far past its end: more than the capture's
    # ring_block_timeout_ms + batch_interval, the longest a packet waits before it reaches us
    lateness: float = 0.03
    max_gap: float = 5.0  # at most this many seconds of empty windows are published for a gap in time
    top_n: int = 10  # entries in each top list (sources, destinations, ports)
    victims: int = 10  # per-victim detail rows in each window
    victim_rows: int = 32  # destinations tracked per window for that detail
    hll_precision: int = 12  # HyperLogLog registers = 2**p bytes; standard error 1.04 / sqrt(2**p)
    window_capacity: int = 2048  # heavy-hitter counters per window (sources and destinations)
    run_capacity: int = 100_000  # whole-run counters: sources are counted exactly up to this many
    buffer: int = 32768  # updates buffered before a heavy-hitter table folds them in
    bidir_peers: int = 65536  # outbound peers remembered per window for bidir_packets
    signature_sample: int = 512  # payload heads checked for signatures per window
    geo: str = "iptocc"  # country lookup for top sources: "iptocc" | "maxmind" | "off"
    geoip_db: str = ""  # GeoLite2-Country.mmdb path, for geo = "maxmind"
    # local TCP ports whose TLS ClientHellos are counted (TrafficWindow.tls_hellos, tls_handshake_flood)
    tls_ports: list[int] = field(default_factory=lambda: [443, 8443])
    memory_cap_mb: int = 384  # the aggregator's RSS must stay below this (config is checked against it)

    def validate(self) -> None:
        per_second = 1.0 / self.window if self.window > 0 else 0.0
        if not 0.001 <= self.window <= 10 or abs(per_second - round(per_second)) > 1e-6:
            raise ValueError("window: must divide one second evenly (e.g. 0.1, 0.05, 0.2, 1.0)")
        if self.lateness < 0 or self.max_gap < 0:
            raise ValueError("lateness: must not be negative")
        if not 4 <= self.hll_precision <= 18:
            raise ValueError("hll_precision: must be 4..18")
        for name in ("top_n", "victims", "victim_rows", "window_capacity", "run_capacity", "buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.victims > self.victim_rows:
            raise ValueError("victims: cannot exceed victim_rows")
        if len(self.tls_ports) > 64 or any(isinstance(p, bool) or not 0 < p < 65536 for p in self.tls_ports):
            raise ValueError("tls_ports: at most 64 ports, each in 1..65535")
        if self.geo not in ("iptocc", "maxmind", "off"):
            raise ValueError(f"geo: {self.geo!r} is not one of iptocc, maxmind, off")
        if self.geo == "maxmind" and not self.geoip_db:
            raise ValueError("geoip_db: needed when geo = \"maxmind\"")
        need = estimate_bytes(self)
        if need > self.memory_cap_mb * 2**20:
            raise ValueError(f"memory_cap_mb: these sizes need up to {need / 2**20:.0f} MiB "
                             f"(interpreter included); raise the cap or lower run_capacity / buffer")
