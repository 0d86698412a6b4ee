"""Every configured access log, followed and parsed into one window builder (pure: no sockets, the
caller's clock). Offsets persist as JSON {path: {"current": Position, "rotated": Position | null}}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from floodwatch.messages import WebWindow
from floodwatch.server.paths import write_private
from floodwatch.settings.weblog import WeblogSettings, WeblogSource
from floodwatch.weblog.parse import parser_for
from floodwatch.weblog.tail import Follower, Position
from floodwatch.weblog.window import WindowBuilder


def load_positions(path: Path) -> dict[str, Any]:
    """The saved positions; {} when there are none or the file is unreadable (logged by the caller)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Logs:
    def __init__(self, settings: WeblogSettings, saved: dict[str, Any], now: float) -> None:
        self.s = settings
        self.window = WindowBuilder(settings, now)
        self.sources: list[tuple[WeblogSource, Follower, Any, bytes]] = []
        for src in settings.source:
            entry = saved.get(src.path)
            entry = entry if isinstance(entry, dict) else {}
            cur = Position.from_json(entry.get("current")) if entry.get("current") else None
            rot = Position.from_json(entry.get("rotated")) if entry.get("rotated") else None
            follower = Follower(src.path, cur, settings.read_bytes, settings.max_line, rotated=rot)
            site = (src.site or Path(src.path).name.removesuffix(".log")).encode()
            self.sources.append((src, follower, parser_for(src.format, src.fields), site))
        self.counters = {"lines": 0, "requests": 0, "malformed": 0, "bytes": 0}

    def poll(self) -> int:
        """Read and count what every file has new; the bytes read (a backlog shows as a full read)."""
        total = 0
        for _src, follower, parse, site in self.sources:
            chunk = follower.read()
            if not chunk:
                continue
            total += len(chunk)
            counts = parse(chunk)
            self.window.add(counts, site)
            self.counters["lines"] += counts.lines
            self.counters["requests"] += counts.requests
            self.counters["malformed"] += counts.malformed
        self.counters["bytes"] += total
        return total

    def flush(self, now: float) -> WebWindow:
        return self.window.flush(now)

    def positions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for src, follower, _, _ in self.sources:
            cur, rot = follower.position(), follower.rotated_position()
            out[src.path] = {"current": cur.to_json() if cur else None, "rotated": rot.to_json() if rot else None}
        return out

    def follower_counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, f, _, _ in self.sources:
            for k, v in f.counters.items():
                out[k] = out.get(k, 0) + v
        return out

    def close(self) -> None:
        for _, f, _, _ in self.sources:
            f.close()


def save_positions(path: Path, positions: dict[str, Any]) -> None:
    """Atomically, 0600 in a 0700 directory."""
    write_private(path, json.dumps(positions, separators=(",", ":")))
