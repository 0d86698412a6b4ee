"""Where a process's memory goes: /proc/PID/smaps summed by kind of mapping (PSS, private dirty, shared).

    sudo .venv/bin/python benchmarks/smaps.py PID [PID ...]   # and their distinct pages together

Kinds: the heap (brk), anonymous mappings (glibc malloc arenas of threads, numpy/pymalloc arenas, thread
stacks), the capture's AF_PACKET ring (a mapping of the packet socket), the Python binary, numpy's and
pyzmq's shared objects, other shared objects, other files. `idle_footprint.py --smaps` prints this for
every process of the agent at the end of its window.
"""

from __future__ import annotations

import contextlib
import re
import struct
import sys
from collections import Counter, defaultdict

FIELDS = ("Rss", "Pss", "Private_Dirty", "Private_Clean", "Shared_Dirty", "Shared_Clean")
HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
PAGE = 4096


def kind(name: str, size_kb: int) -> str:
    if name == "[heap]":
        return "heap"
    if name.startswith("[stack"):
        return "main stack"
    if name.startswith("socket:") or name.startswith("packet"):
        return "packet ring"
    if name == "":
        return "anon >= 1 MiB" if size_kb >= 1024 else "anon < 1 MiB"
    if name.startswith("["):
        return name
    if "numpy" in name:
        return "numpy .so"
    if "zmq" in name:
        return "zmq .so"
    if re.search(r"/python3[.0-9]*$|libpython", name):
        return "python binary"
    if ".so" in name:
        return "other .so"
    return "other files"


def by_kind(pid: int) -> dict[str, Counter[str]]:
    """kB per field, per kind of mapping, plus the number of mappings ("n")."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    cur = "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if HEADER.match(line):
                parts = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = kind(parts[5].strip() if len(parts) > 5 else "", (hi - lo) // 1024)
                out[cur]["n"] += 1
                continue
            key, _, rest = line.partition(":")
            if key in FIELDS:
                out[cur][key] += int(rest.split()[0])
    return out


def table(pid: int, name: str = "", min_pss_kb: int = 256) -> str:
    kinds = by_kind(pid)
    total = Counter[str]()
    for c in kinds.values():
        total.update(c)
    lines = [f"{name or pid} (pid {pid}): pss {total['Pss'] / 1024:.1f} MB, private dirty "
             f"{total['Private_Dirty'] / 1024:.1f} MB, rss {total['Rss'] / 1024:.1f} MB"]
    for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]["Pss"]):
        if c["Pss"] >= min_pss_kb:
            lines.append(f"    {k:<14} pss {c['Pss'] / 1024:5.1f}  private dirty {c['Private_Dirty'] / 1024:5.1f}"
                         f"  shared {(c['Shared_Dirty'] + c['Shared_Clean']) / 1024:5.1f}  ({c['n']} mappings)")
    return "\n".join(lines)


def distinct_pages(pids: list[int]) -> int:
    """Bytes of the distinct physical pages the processes map (/proc/PID/pagemap, as root): what their
    PSS would sum to if no process outside them mapped any of the same pages. PSS divides a shared
    library's pages among every process on the host that maps it, so the same agent shows less PSS on a
    busy machine (other Python processes share libpython, numpy, ...) than on a quiet one."""
    seen: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps, \
                open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo >= 1 << 47:  # [vsyscall]
                    continue
                pagemap.seek(lo // PAGE * 8)
                for (entry,) in struct.iter_unpack("<Q", pagemap.read((hi - lo) // PAGE * 8)):
                    if entry >> 63:  # present: bits 0-54 are the frame number
                        seen.add(entry & ((1 << 55) - 1))
    return len(seen) * PAGE


def main() -> int:
    pids = [int(arg) for arg in sys.argv[1:]]
    for pid in pids:
        print(table(pid))
    print(f"distinct pages of these processes: {distinct_pages(pids) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
