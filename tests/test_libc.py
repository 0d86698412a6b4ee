"""The runtime's libc calls (floodwatch/runtime/libc.py): the supervisor's page-out of the library pages
only it has resident, on the real kernel, in a fresh interpreter each (the page-out covers the whole
process)."""

from __future__ import annotations

import json
import subprocess
import textwrap

from floodwatch.runtime.libc import read_only_file_mappings
from tests.helpers import PYTHON, REPO

MAPS = """\
55d0c0a00000-55d0c0a2e000 r--p 00000000 fd:01 1311 /usr/bin/python3.11
55d0c0a2e000-55d0c0d1a000 r-xp 0002e000 fd:01 1311 /usr/bin/python3.11
55d0c0f5e000-55d0c0fa9000 rw-p 0035e000 fd:01 1311 /usr/bin/python3.11
55d0c1b7b000-55d0c2000000 rw-p 00000000 00:00 0 [heap]
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0
7f1e2d400000-7f1e2d600000 rw-s 00000000 00:08 77 socket:[77]
7f1e2e000000-7f1e2e010000 r--p 00000000 fd:01 2222 /tmp/x (deleted)
7ffd7c5e0000-7ffd7c601000 rw-p 00000000 00:00 0 [stack]
7ffd7c7d8000-7ffd7c7da000 r-xp 00000000 00:00 0 [vdso]
"""


def test_the_read_only_mappings_of_files_are_the_ones_paged_out() -> None:
    """Code and constants of files: not the data a process writes (its file mappings' rw pages, the heap,
    anonymous memory, sockets, stacks), not the kernel's vdso."""
    assert read_only_file_mappings(MAPS) == [
        (0x55D0C0A00000, 0x2E000), (0x55D0C0A2E000, 0x2EC000), (0x7F1E2E000000, 0x10000)]


def _run(code: str) -> dict[str, int]:
    prog = textwrap.dedent("""
        import hashlib, json, mmap, os, tempfile
        from floodwatch.runtime.libc import page_out_files

        def rss(addr):
            lines = open("/proc/self/smaps").read().splitlines()
            for i, line in enumerate(lines):
                if line.startswith(f"{addr:x}-"):
                    return next(int(x.split()[1]) for x in lines[i:] if x.startswith("Rss:"))

        with tempfile.NamedTemporaryFile() as f:
            f.write(os.urandom(8 << 20))
            f.flush()
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            digest = hashlib.sha256(m).hexdigest()     # reads every page
            addr = int(open("/proc/self/maps").read().split(f.name)[0].splitlines()[-1].split("-")[0], 16)
    """) + textwrap.indent(textwrap.dedent(code), "    ")
    out = subprocess.run([PYTHON, "-c", prog], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_pages_only_this_process_maps_leave_memory_and_read_back_the_same() -> None:
    got = _run("""
        before = rss(addr)
        advised = page_out_files()
        after = rss(addr)
        same = hashlib.sha256(m).hexdigest() == digest   # paged in again from the file
        print(json.dumps({"before": before, "after": after, "advised": advised, "same": same}))
    """)
    assert got["before"] >= 8 * 1024 - 4 and got["advised"] > 10
    assert got["after"] < 1024, got  # of 8 MiB resident, less than 1 MiB is left
    assert got["same"]


def test_pages_another_process_maps_too_stay() -> None:
    """What the supervisor shares with its actors (the interpreter, the modules' libraries) is theirs too:
    a child forked after the pages were read maps them as well, and they stay resident."""
    got = _run("""
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(done_w)
            hashlib.sha256(m).hexdigest()
            os.write(ready_w, b"x")
            os.read(done_r, 1)   # until the parent closes its end: holds the mapping meanwhile
            os._exit(0)
        os.read(ready_r, 1)
        before = rss(addr)
        page_out_files()
        after = rss(addr)
        os.close(done_w)
        os.waitpid(child, 0)
        print(json.dumps({"before": before, "after": after}))
    """)
    assert got["after"] >= got["before"] - 64, got
