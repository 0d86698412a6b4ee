"""Filling the holes of the supervisor's image before the fork (floodwatch/runtime/supervisor/holes.py).

Each check runs in a fresh interpreter (the fill keeps its objects and chunks for good), on the real
CPython allocator and glibc's malloc: holes are made as imports leave them (objects freed among objects
that stay), then filled, then the allocators are asked what is still free.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

from tests.helpers import PYTHON, REPO

MAKE_HOLES = textwrap.dedent("""
    import gc, json
    from floodwatch.runtime.supervisor import holes
    small = [bytes(n % 400) for n in range(60000)]      # pymalloc blocks of every size class
    large = [bytearray(600 + n % 3000) for n in range(3000)]  # C heap chunks (above 512 bytes)
    del small[::3], large[::2]                          # freed among the ones that stay: holes
    gc.collect()
""")


def _run(code: str) -> dict[str, object]:
    out = subprocess.run([PYTHON, "-c", MAKE_HOLES + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_free_block_of_the_pools_in_use_is_taken() -> None:
    """After the fill, no size class has more free blocks than one pool holds (16 KiB), give or take the
    few the fill's own loop frees: what is left is the last pool the fill started, not holes among live
    objects (before: several pools' worth in most classes)."""
    got = _run("""
        before = holes.free_blocks()
        holes.fill_free_blocks()
        print(json.dumps({"before": before, "after": holes.free_blocks()}))
    """)
    before, after = got["before"], got["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    per_pool = {size: (16384 - 48) // int(size) for size in after}
    assert sum(before.values()) > 10000  # the holes were there
    crowded = {s: n for s, n in after.items() if n > per_pool[s] + 8}
    assert not crowded, crowded


def test_the_heaps_free_chunks_are_taken_without_touching_their_pages() -> None:
    """The main heap's free chunks are allocated (and not written: the process grows by their headers,
    not by their size), so a later malloc of a forked process takes fresh memory, not a shared page."""
    got = _run("""
        def rss():
            for line in open("/proc/self/smaps_rollup"):
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
        libc = holes._libc()
        holes.malloc_trim()
        before, free_before, rss_before = len(holes.free_chunks(libc)), libc.mallinfo2().fordblks, rss()
        count_before = sum(n for _, n in holes.free_chunks(libc))
        kept = holes.fill_free_chunks()
        count_after = sum(n for _, n in holes.free_chunks(libc))
        print(json.dumps({"count_before": count_before, "count_after": count_after, "kept": kept,
                          "free_before": free_before, "free_after": libc.mallinfo2().fordblks,
                          "grew": rss() - rss_before}))
    """)
    assert int(got["count_before"]) > 500  # type: ignore[call-overload]
    assert int(got["count_after"]) <= int(got["count_before"]) // 20, got  # type: ignore[call-overload]
    assert int(got["free_after"]) < int(got["free_before"]) // 10, got  # type: ignore[call-overload]
    assert int(got["grew"]) < int(got["free_before"]) // 4, got  # type: ignore[call-overload]
