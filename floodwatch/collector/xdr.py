"""XDR chains of (format, length, body) items, walked for many chains at once with numpy.

sFlow v5 nests such chains: the samples of a datagram, the records of a sample. Each item is a 32-bit
format, a 32-bit length and `length` body bytes. `walk()` follows every chain of a batch together, one
numpy step per item position, so its Python cost is per position, not per item; chains longer than
VEC_STEPS (rare: an exporter sends a few samples a datagram) finish in a plain loop. A chain whose item
runs past the chain's end is bad: none of its items are returned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from floodwatch.capture.fastparse import gather

VEC_STEPS = 16  # item positions walked column-wise; further items one by one
_HEAD = struct.Struct(">II")


def words(flat: np.ndarray, offs: np.ndarray, n: int) -> np.ndarray:
    """(len(offs), n) big-endian uint32 words at the offsets, as int64 (clipped at the buffer's end: the
    caller checks bounds)."""
    raw = np.ascontiguousarray(gather(flat, offs, 4 * n))
    return raw.view(">u4").reshape(len(offs), n).astype(np.int64)


@dataclass
class Items:
    """The items of a batch of chains, in no particular order: format, body offset, body end, chain."""

    fmt: np.ndarray
    body: np.ndarray
    end: np.ndarray
    chain: np.ndarray

    def __len__(self) -> int:
        return len(self.fmt)

    def select(self, mask: np.ndarray) -> Items:
        if mask.all():
            return self
        return Items(self.fmt[mask], self.body[mask], self.end[mask], self.chain[mask])


def walk(buf: bytes, flat: np.ndarray, start: np.ndarray, end: np.ndarray,
         count: np.ndarray) -> tuple[Items, np.ndarray]:
    """Every item of the chains (the i-th starts at start[i], holds count[i] items, must end by end[i]);
    returns the items of the good chains and the mask of bad chains."""
    n = len(start)
    pos, left = start.astype(np.int64), count.astype(np.int64)
    bad = np.zeros(n, dtype=bool)
    parts: list[tuple[np.ndarray, ...]] = []
    for _ in range(VEC_STEPS):
        act = np.flatnonzero(left > 0)
        if not len(act):
            break
        whole = len(act) == n
        p, e = (pos, end) if whole else (pos[act], end[act])
        w = words(flat, p, 2)
        stop = p + 8 + w[:, 1]
        over = (p + 8 > e) | (stop > e)
        if over.any():
            bad[act[over]] = True
            left[act[over]] = 0
            ok = ~over
            act, w, p, stop = act[ok], w[ok], p[ok], stop[ok]
        parts.append((w[:, 0], p + 8, stop, act))
        pos[act] = stop
        left[act] -= 1
    rest = np.flatnonzero(left > 0)
    if len(rest):
        parts.append(_walk_rest(buf, pos[rest], end[rest], left[rest], rest, bad))
    if not parts:
        z = np.zeros(0, dtype=np.int64)
        return Items(z, z, z, z), bad
    items = Items(*parts[0]) if len(parts) == 1 else Items(*(np.concatenate([p[k] for p in parts]) for k in range(4)))
    return (items.select(~bad[items.chain]) if bad.any() else items), bad


def _walk_rest(buf: bytes, pos: np.ndarray, end: np.ndarray, left: np.ndarray, chain: np.ndarray,
               bad: np.ndarray) -> tuple[np.ndarray, ...]:
    """The items past VEC_STEPS, one by one (marks bad chains in `bad`)."""
    out: list[tuple[int, int, int, int]] = []
    unpack = _HEAD.unpack_from
    for p, e, k, c in zip(pos.tolist(), end.tolist(), left.tolist(), chain.tolist(), strict=True):
        for _ in range(k):
            if p + 8 > e:
                bad[c] = True
                break
            fmt, length = unpack(buf, p)
            stop = p + 8 + length
            if stop > e:
                bad[c] = True
                break
            out.append((fmt, p + 8, stop, c))
            p = stop
    t = np.array(out, dtype=np.int64).reshape(-1, 4)
    return t[:, 0], t[:, 1], t[:, 2], t[:, 3]
