"""[weblog] config section: web server access logs followed as they are written (actors/weblog.py).

One `[[weblog.source]]` per log file. Formats: `nginx` and `apache` (the combined log format, also with
a leading virtual host as Apache's `vhost_combined` writes it), `caddy` (Caddy's JSON access log) and
`json` (one JSON object per line; `fields` maps our names to the log's keys, dotted for nested ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMATS = ("nginx", "apache", "caddy", "json")
JSON_FIELDS = ("client", "method", "uri", "status", "agent", "host")


@dataclass(frozen=True)
class WeblogSource:
    path: str = ""
    format: str = "nginx"
    site: str = ""  # the site's name when lines carry no Host (empty: the file's name)
    fields: dict[str, str] = field(default_factory=dict)  # json: client method uri status agent host -> key

    def validate(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError("path: must be an absolute path")
        if self.format not in FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        unknown = sorted(set(self.fields) - set(JSON_FIELDS))
        if unknown:
            raise ValueError(f"fields: unknown name(s) {unknown}; known: {', '.join(JSON_FIELDS)}")
        if self.format == "json" and not {"client", "uri"} <= set(self.fields):
            raise ValueError("fields: the json format needs at least `client` and `uri`")


@dataclass(frozen=True)
class HttpDetectSettings:
    """[weblog.detect]: how the detector turns weblog windows into http_flood incidents."""

    floor_rps: int = 200  # the learnt threshold (requests/s, host and per site) never goes below this
    multiplier: float = 3.0  # threshold = max(floor, multiplier * p99, mean_multiplier * mean) per hour
    mean_multiplier: float = 4.0
    min_learn_seconds: float = 600.0
    fast_ratio: float = 5.0  # a window at this multiple opens at once ...
    sustain_seconds: float = 1.0  # ... below it the rate must hold this long
    # A flood comes from few: the top 10 clients carry this share, or the mean rate per distinct client
    # over the last `client_horizon` seconds is this high. A crowd (a sale: many clients at human rates)
    # over the threshold opens nothing.
    concentration: float = 0.5
    client_rps: float = 15.0
    client_horizon: float = 2.0
    resolve_ratio: float = 0.7
    hold_down: float = 5.0
    cooldown: float = 5.0
    update_interval: float = 1.0
    block_share: float = 0.05  # top clients with at least this share get a block proposal
    hashlimit_rps: int = 50  # proposed per-source limit of new connections to the web ports
    web_ports: list[int] = field(default_factory=lambda: [80, 443])
    baseline_file: str = "detector/http_baseline.json"  # relative to agent.state_dir

    def validate(self) -> None:
        if self.floor_rps < 1 or self.fast_ratio < 1 or self.multiplier <= 0 or self.mean_multiplier <= 0:
            raise ValueError("floor_rps: floor_rps >= 1, fast_ratio >= 1, multipliers > 0")
        if not (0 < self.concentration <= 1 and 0 < self.resolve_ratio <= 1 and 0 < self.block_share <= 1):
            raise ValueError("concentration: shares and ratios must be in (0, 1]")
        if self.client_rps <= 0 or self.client_horizon <= 0:
            raise ValueError("client_rps: client_rps and client_horizon must be > 0")
        if any(not 0 < p < 65536 for p in self.web_ports) or self.hashlimit_rps < 1:
            raise ValueError("web_ports: ports in 1..65535, hashlimit_rps >= 1")
        if self.baseline_file.startswith("/") or ".." in self.baseline_file.split("/"):
            raise ValueError("baseline_file: must be relative to agent.state_dir")


@dataclass(frozen=True)
class WeblogSettings:
    enabled: bool = False
    source: list[WeblogSource] = field(default_factory=list)
    window: float = 0.25  # seconds of requests per weblog.window
    poll_interval: float = 0.05  # seconds between reads of the files
    read_bytes: int = 4 << 20  # at most this much of one file per read (a backlog is read over several)
    capacity: int = 512  # heavy-hitter table size per dimension (clients, prefixes, paths, agents, sites)
    top_n: int = 10  # entries per dimension in a window
    prefix_v4: int = 24  # client prefixes
    prefix_v6: int = 64
    state_file: str = "weblog/offsets.json"  # relative to agent.state_dir: offset, inode, head per file
    max_line: int = 16384  # a longer line is malformed (and skipped)
    detect: HttpDetectSettings = field(default_factory=HttpDetectSettings)

    def validate(self) -> None:
        if self.window <= 0 or self.poll_interval <= 0:
            raise ValueError("window: window and poll_interval must be > 0")
        if self.read_bytes < 65536 or self.capacity < 16 or self.top_n < 1 or self.max_line < 256:
            raise ValueError("read_bytes: read_bytes >= 65536, capacity >= 16, top_n >= 1, max_line >= 256")
        if not (8 <= self.prefix_v4 <= 32 and 16 <= self.prefix_v6 <= 128):
            raise ValueError("prefix_v4: prefix lengths out of range")
        if self.state_file.startswith("/") or ".." in self.state_file.split("/"):
            raise ValueError("state_file: must be relative to agent.state_dir")
        paths = [s.path for s in self.source]
        if len(set(paths)) != len(paths):
            raise ValueError("source: a path is listed twice")
        if self.enabled and not self.source:
            raise ValueError("source: enabled needs at least one [[weblog.source]]")
