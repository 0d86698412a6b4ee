"""The OS identifier for heartbeats, from /etc/os-release (e.g. "Debian GNU/Linux 12")."""

from __future__ import annotations

import platform
import shlex
from pathlib import Path

OS_RELEASE = Path("/etc/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines (values possibly shell-quoted) -> a dict; bad lines are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            continue
        out[key.strip()] = parts[0] if parts else ""
    return out


def os_name(path: Path = OS_RELEASE) -> str:
    """NAME VERSION_ID ("Ubuntu 22.04"), else PRETTY_NAME, else the kernel's name and release."""
    try:
        info = parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        info = {}
    name, version = info.get("NAME", ""), info.get("VERSION_ID", "")
    if name and version:
        return f"{name} {version}"[:100]
    if info.get("PRETTY_NAME"):
        return info["PRETTY_NAME"][:100]
    return f"{platform.system()} {platform.release()}".strip()[:100]
