"""[detector] config section: thresholds, baselines, confirmation and resolution timing.

Rates are inbound (DIR_UNKNOWN counts as inbound). Times are seconds of window (packet) time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorSettings:
    enabled: bool = True
    # Static thresholds (0 = none). When set they are used instead of the learnt baseline; the API's
    # config `pps_threshold` / `bps_threshold`, when present, overrides them.
    pps_threshold: int = 0  # inbound packets/s for the whole host
    bps_threshold: int = 0  # inbound bits/s for the whole host
    victim_pps_threshold: int = 0  # per destination address (and per prefix); 0 = the host threshold
    victim_bps_threshold: int = 0
    # Dynamic baseline: threshold = max(floor, multiplier * p99, mean_multiplier * mean) of the profile
    # for this hour of the week (hour of the day until a week is learnt, then all hours).
    dynamic: bool = True  # false: no learning; the floor applies when no static threshold is set
    floor_pps: int = 20_000  # the dynamic threshold never goes below this
    floor_bps: int = 500_000_000
    multiplier: float = 3.0
    mean_multiplier: float = 4.0
    min_learn_seconds: float = 600.0  # traffic seconds a profile needs before it is trusted
    baseline_file: str = "detector/baseline.json"  # relative to agent.state_dir
    baseline_save_interval: float = 60.0  # seconds of wall time between saves (also saved on stop)
    # Opening
    fast_ratio: float = 5.0  # at this multiple of the threshold ...
    fast_windows: int = 1  # ... this many windows (100 ms each) are enough to open (the first at 5x)
    sustain_seconds: float = 1.2  # below fast_ratio the flood must last this long: a 1 s micro-burst
    # covers at most 1.1 s of 100 ms windows, so it never opens
    gap_windows: int = 1  # windows under the threshold tolerated while confirming
    # Resolution
    resolve_ratio: float = 0.7  # hysteresis: under this multiple of the threshold counts as quiet
    hold_down: float = 5.0  # quiet this long -> resolved
    cooldown: float = 5.0  # after resolving, no new incident for this long
    update_interval: float = 1.0  # incident.updated period while active
    # tls_handshake_flood (floodwatch/detect/tls.py): new TLS connections (ClientHellos/s to the
    # aggregator's tls_ports) over a learnt baseline (multiplier, mean_multiplier), never below this floor
    tls_floor: int = 300
    tls_hashlimit_rps: int = 50  # proposed per-source limit of new connections to the TLS ports
    # A TCP connection with traffic both ways (bulk transfer) is not counted towards the thresholds
    bulk_exemption: bool = True
    carpet_prefix_v4: int = 24  # a spread over this prefix is one target (carpet bombing)
    carpet_prefix_v6: int = 64

    def validate(self) -> None:
        for name in ("pps_threshold", "bps_threshold", "victim_pps_threshold", "victim_bps_threshold",
                     "floor_pps", "floor_bps", "gap_windows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.fast_windows < 1:
            raise ValueError("fast_windows: must be >= 1")
        if self.tls_floor < 1 or self.tls_hashlimit_rps < 1:
            raise ValueError("tls_floor: tls_floor and tls_hashlimit_rps must be >= 1")
        if not 0 < self.resolve_ratio <= 1:
            raise ValueError("resolve_ratio: must be in (0, 1]")
        if self.fast_ratio < 1 or self.multiplier <= 0 or self.mean_multiplier <= 0:
            raise ValueError("fast_ratio: must be >= 1 (and multipliers > 0)")
        for name in ("sustain_seconds", "hold_down", "cooldown", "update_interval", "baseline_save_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.baseline_file.startswith("/") or ".." in self.baseline_file.split("/"):
            raise ValueError("baseline_file: must be a relative path inside the state directory")
        if not (8 <= self.carpet_prefix_v4 <= 32 and 16 <= self.carpet_prefix_v6 <= 128):
            raise ValueError("carpet_prefix_v4: must be 8-32 (and carpet_prefix_v6 16-128)")
