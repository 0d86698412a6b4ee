"""Retention of saved captures: an age limit, a disk cap and a minimum of free space, oldest first.

`plan()` is pure: given the stored captures (each a capture file and its findings JSON, grouped by
name), the time and the free space, it returns what to delete, oldest first. The thin file-system layer
(`scan`, `free_bytes`, `remove`, `remove_stale_parts`) does the I/O; it only touches files whose names
the recorder writes, in the recorder's own directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from floodwatch.recorder.writer import EXTENSIONS, PART_SUFFIX

FINDINGS_SUFFIX = ".findings.json"
DAY = 86400.0


@dataclass(frozen=True)
class Policy:
    retention_days: float = 30.0  # 0: no age limit
    max_total_bytes: int = 2 * 1024**3  # 0: no cap
    min_free_bytes: int = 512 * 1024**2  # 0: no minimum


@dataclass
class Stored:
    """One incident's files (the capture and its findings) with the capture's time."""

    name: str
    mtime: float
    size: int = 0
    paths: list[str] = field(default_factory=list)


def group_of(filename: str) -> str | None:
    """The incident name a file of ours belongs to, or None for a file that is not ours."""
    if filename.startswith("."):
        return None
    if filename.endswith(FINDINGS_SUFFIX):
        return filename[: -len(FINDINGS_SUFFIX)]
    for ext in EXTENSIONS.values():
        if filename.endswith(ext):
            return filename[: -len(ext)]
    return None


def plan(stored: Iterable[Stored], now: float, policy: Policy, free: int | None,
         keep: frozenset[str] = frozenset()) -> list[Stored]:
    """What to delete, oldest first: past the age, then over the cap, then while free space is short.

    `free` is the file system's free bytes (None when unknown); names in `keep` are never deleted.
    """
    items = sorted((s for s in stored if s.name not in keep), key=lambda s: (s.mtime, s.name))
    total = sum(s.size for s in stored)
    doomed: list[Stored] = []
    left = list(items)
    if policy.retention_days > 0:
        cutoff = now - policy.retention_days * DAY
        doomed = [s for s in left if s.mtime < cutoff]
        left = [s for s in left if s.mtime >= cutoff]
    total -= sum(s.size for s in doomed)
    freed = sum(s.size for s in doomed)
    while left and policy.max_total_bytes > 0 and total > policy.max_total_bytes:
        s = left.pop(0)
        doomed.append(s)
        total -= s.size
        freed += s.size
    while left and free is not None and policy.min_free_bytes > 0 and free + freed < policy.min_free_bytes:
        s = left.pop(0)
        doomed.append(s)
        freed += s.size
    return doomed


# -- the file-system layer ------------------------------------------------------------------------


def scan(directory: Path) -> list[Stored]:
    """Our files in `directory`, grouped per incident; a missing directory holds nothing."""
    groups: dict[str, Stored] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        name = group_of(entry.name)
        if name is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        g = groups.setdefault(name, Stored(name, st.st_mtime))
        g.mtime = max(g.mtime, st.st_mtime) if not entry.name.endswith(FINDINGS_SUFFIX) else g.mtime
        g.size += st.st_size
        g.paths.append(entry.path)
    return list(groups.values())


def free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def remove(doomed: Iterable[Stored]) -> tuple[int, int, list[str]]:
    """Delete the groups' files: (files deleted, bytes freed, errors)."""
    count = freed = 0
    errors: list[str] = []
    for s in doomed:
        for p in s.paths:
            try:
                size = os.lstat(p).st_size
                os.unlink(p)
            except FileNotFoundError:
                continue
            except OSError as e:
                errors.append(f"{p}: {e.strerror or e}")
                continue
            count += 1
            freed += size
    return count, freed, errors


def remove_stale_parts(directory: Path) -> int:
    """Temporary files left by a crash (`.<name>.part`): never uploaded, safe to drop at start."""
    n = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                n += 1
            except OSError:
                pass
    return n
