"""The holes of the supervisor's image, filled before the zygote is forked from it.

After the preload and its collection, the image (everything the supervisor imported, which every actor
maps copy-on-write) is full of holes: free blocks scattered over pymalloc's pools (about 0.5 MB in
5,000 blocks) and free chunks scattered over the C heap (about 1 MB in 600 chunks). A forked process
allocates into those holes first, so each of its first objects writes a page of the shared image and
copies it: every actor, the zygote and the supervisor itself then held its own copy of the same pages.
Filling the holes once, in the supervisor, before the fork (objects that stay alive; heap chunks that
are allocated and never written) sends every later allocation of every process to pages of its own
that nobody shares anyway. Measured: -3 MB for pymalloc's blocks, -10 MB for the heap's chunks, over
the eight processes of `floodwatch run` (BENCHMARKS.md, "Idle memory: below 120 MB").

Both are CPython- and glibc-specific (sys._debugmallocstats, mallinfo2, malloc_info): where either is
missing or answers something else, nothing is filled and nothing else changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Callable

from floodwatch.runtime.libc import libc as libc_of_process
from floodwatch.runtime.libc import malloc_trim

_KEPT: list[object] = []  # the pymalloc fillers (alive for good: frozen with the image)
_HEAP_KEPT: list[int] = []  # addresses of the heap chunks kept allocated (never written, never freed)
_POOL_ROW = re.compile(r"\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_HEAP_SIZE = re.compile(r'<size from="(\d+)" to="(\d+)" total="\d+" count="(\d+)"/>')
ROUNDS = 4  # a filled chunk larger than asked leaves a smaller hole: the next round fills it
MAX_CHUNKS = 10_000  # each allocation asks mallinfo2, which walks the bins: bounded work (~600 here)


def _captured(write: Callable[[], None]) -> str:
    """What `write` printed on file descriptor 2 (C-level output: sys._debugmallocstats)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            write()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        return f.read().decode(errors="replace")


def free_blocks() -> dict[int, int]:
    """pymalloc's free blocks in its pools in use, by block size (from sys._debugmallocstats)."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return {}
    rows = {}
    for line in _captured(stats).splitlines():
        m = _POOL_ROW.match(line)
        if m:
            _index, size, _pools, _used, avail = map(int, m.groups())
            rows[size] = avail
    return rows


def _block_of(size: int, i: int) -> object:
    """A new object that pymalloc puts in a block of `size` bytes (16-byte classes up to 512)."""
    if size == 16:
        return object()
    if size == 32:
        return float(i) + 0.5  # 24 bytes
    return bytes(size - 33)  # a bytes object of n bytes takes 33 + n


def fill_free_blocks() -> int:
    """Take every free block of pymalloc's pools in use with an object that stays; how many."""
    free = free_blocks()
    fillers: list[object] = [None] * sum(free.values())  # allocated first: appending would allocate
    i = 0
    for size, count in free.items():
        for _ in range(count):
            fillers[i] = _block_of(size, i)
            i += 1
    _KEPT.append(fillers)
    return i


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL:
    libc = libc_of_process()
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    return libc


def free_chunks(libc: ctypes.CDLL) -> list[tuple[int, int]]:
    """The main heap's free chunks as (smallest size of the range, count), from malloc_info's XML."""
    with tempfile.TemporaryFile() as f:
        stream = libc.fdopen(os.dup(f.fileno()), b"w")
        if not stream:
            return []
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        f.seek(0)
        xml = f.read().decode(errors="replace")
    main_heap = xml.split("</heap>", 1)[0]
    return [(int(lo), int(count)) for lo, _hi, count in _HEAP_SIZE.findall(main_heap)]


def fill_free_chunks() -> int:
    """Allocate (and never write) every free chunk of the main heap; how many. An allocation the heap's
    top served (not a hole: the top shrank) is freed again and ends that size's turn."""
    libc = _libc()
    kept = 0
    for _ in range(ROUNDS):
        chunks = free_chunks(libc)
        if not chunks:
            break
        for size, count in sorted(chunks, reverse=True):
            for _ in range(count):
                top = libc.mallinfo2().keepcost
                p = libc.malloc(max(size - 16, 24))
                if not p or kept >= MAX_CHUNKS:
                    if p:
                        libc.free(p)
                    return kept
                if libc.mallinfo2().keepcost < top:
                    libc.free(p)
                    break
                _HEAP_KEPT.append(p)
                kept += 1
    return kept


def fill() -> tuple[int, int]:
    """Before the fork, after the collection: trim the heap, then fill both kinds of holes. Returns
    (pymalloc blocks, heap chunks) filled; (0, 0) where the interpreter or libc is not the one known."""
    malloc_trim()  # the import's garbage, freed by the collection, would stay resident in the image (1.3 MB)
    blocks = chunks = 0
    with contextlib.suppress(Exception):  # an unknown allocator's answer: no filling, nothing broken
        blocks = fill_free_blocks()
    with contextlib.suppress(Exception):
        chunks = fill_free_chunks()
    return blocks, chunks
