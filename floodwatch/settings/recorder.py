"""[recorder] config section: the incident capture files, their retention and their dissection."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class RecorderSettings:
    enabled: bool = True
    # Where capture files and their findings go; empty: <agent.state_dir>/pcaps (created 0750).
    output_dir: str = ""
    format: str = "pcapng"  # "pcapng" (sampling rate in a comment) or "pcap"
    file_mode: int = 0o640  # 0o640 or 0o600
    ring_packets: int = 1000  # recent frames kept to start a capture before the attack
    ring_bytes: int = 32 * MiB  # ... and at most this many bytes of them
    snaplen: int = 65535  # longer frames are cut to this many bytes
    max_packets: int = 10_000  # per file, ring frames included
    max_seconds: float = 300.0  # per file: capture time after the first attack frame
    max_file_bytes: int = 95_000_000  # per file (the API takes uploads up to 100 MB)
    max_open: int = 4  # incidents recorded at once; more are counted (skipped_busy) and not recorded
    close_delay: float = 2.0  # after incident.resolved, wait this long for frames still in flight
    # Retention: what is over is deleted oldest first (a capture together with its findings).
    retention_days: float = 30.0  # 0: keep forever
    max_total_bytes: int = 2048 * MiB  # all captures and findings together; 0: no cap
    min_free_bytes: int = 512 * MiB  # free space kept on the file system; 0: no minimum
    retention_interval: float = 300.0  # seconds between retention passes (also after each file)
    # Dissection: tshark on each saved file in a child process, with a hard time limit.
    dissect: bool = True
    tshark_path: str = "tshark"  # a name looked up in PATH, or a path
    dissect_timeout: float = 120.0  # the child (and its tshark) is killed after this many seconds
    dissect_user: str = "nobody"  # tshark runs as this user when the agent is root; "" keeps root
    dissect_memory_mb: int = 2048  # address-space limit of the child and tshark; 0: none
    dissect_queue: int = 16  # saved files waiting for dissection; the oldest is dropped past it
    subtype_min_packets: int = 10  # evidence packets needed to confirm a subtype
    subtype_min_share: float = 0.2  # share of the file needed to propose another subtype

    def validate(self) -> None:
        if self.format not in ("pcap", "pcapng"):
            raise ValueError(f"format: {self.format!r} is neither 'pcap' nor 'pcapng'")
        if self.file_mode not in (0o600, 0o640):
            raise ValueError(f"file_mode: {oct(self.file_mode)} must be 0o600 or 0o640")
        for name in ("ring_packets", "ring_bytes", "max_total_bytes", "min_free_bytes", "dissect_memory_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        for name in ("max_packets", "max_file_bytes", "max_open", "dissect_queue", "subtype_min_packets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if not 256 <= self.snaplen <= 262144:
            raise ValueError("snaplen: must be within 256..262144")
        for name in ("max_seconds", "close_delay", "retention_interval", "dissect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        if self.retention_days < 0 or not 0 <= self.subtype_min_share <= 1:
            raise ValueError("retention_days must be >= 0 and subtype_min_share within 0..1")
        if self.max_total_bytes and self.max_total_bytes < self.max_file_bytes:
            raise ValueError("max_total_bytes: must be at least max_file_bytes (or 0)")
