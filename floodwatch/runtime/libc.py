"""The few Linux and glibc calls the runtime makes through ctypes, in one place.

Each returns False (or does nothing) where the call is missing (another libc, an old kernel): they save
memory or name processes, and nothing depends on them working.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
MADV_PAGEOUT = 21  # Linux >= 5.4


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int | bytes) -> bool:
    try:
        return int(libc().prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """The name `ps -o comm`, top and /proc/PID/comm show (a fork keeps its parent's command line)."""
    prctl(PR_SET_NAME, name.encode()[:15])


def malloc_trim() -> None:
    """Give the pages of the C heap's free chunks back to the system (glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        libc().malloc_trim(0)


def read_only_file_mappings(maps: str) -> list[tuple[int, int]]:
    """(address, length) of each mapping of a file that the process cannot write (code and constants of
    the interpreter and its libraries), from the text of /proc/PID/maps."""
    out = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/") or "w" in parts[1]:
            continue
        lo, _, hi = parts[0].partition("-")
        out.append((int(lo, 16), int(hi, 16) - int(lo, 16)))
    return out


def page_out_files() -> int:
    """Drop from memory the pages of read-only file mappings that only this process has resident
    (madvise MADV_PAGEOUT: the kernel skips pages other processes map too): for the supervisor, the
    library code its imports ran once and no actor runs. A page used again is read back from the file.
    Returns the number of mappings advised (0 where the call is missing)."""
    try:
        with open("/proc/self/maps") as f:
            mappings = read_only_file_mappings(f.read())
        madvise = libc().madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for addr, length in mappings:
        done += int(madvise(addr, length, MADV_PAGEOUT)) == 0
    return done
