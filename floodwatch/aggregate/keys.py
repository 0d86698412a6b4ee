"""64-bit keys for addresses, and the hash every sketch uses.

An address key is exact for IPv4 (the low 64 bits of the v4-mapped form, top bit clear) and a 64-bit
hash with the top bit set for IPv6 (two IPv6 sources collide with probability about n^2 / 2^64).
Sorting and counting uint64 keys is ten times faster in numpy than 16-byte strings.
"""

from __future__ import annotations

import socket

import numpy as np

from floodwatch.records import RECORD_DTYPE, addr_text

_OFF = {name: RECORD_DTYPE.fields[name][1] for name in ("src", "dst")}  # type: ignore[index]

# A zero-copy view of a record buffer exposing the addresses as big-endian 64-bit halves.
ADDR_VIEW = np.dtype(
    {
        "names": ["src_hi", "src_lo", "dst_hi", "dst_lo"],
        "formats": [">u8", ">u8", ">u8", ">u8"],
        "offsets": [_OFF["src"], _OFF["src"] + 8, _OFF["dst"], _OFF["dst"] + 8],
        "itemsize": RECORD_DTYPE.itemsize,
    }
)

_V4_HI = 0
_V4_LO_PREFIX = 0xFFFF
_TOP = np.uint64(1 << 63)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, vectorised (a bijection with good avalanche)."""
    x = x ^ (x >> _S33)
    x = x * _M1
    x = x ^ (x >> _S33)
    x = x * _M2
    return x ^ (x >> _S33)


def addr_keys(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Address halves -> uint64 keys (exact for IPv4, hashed with the top bit set for IPv6)."""
    lo = lo.astype(np.uint64)  # native order once (the record views are big-endian: each op swapped)
    v4 = (hi == _V4_HI) & ((lo >> np.uint64(32)) == _V4_LO_PREFIX)
    if v4.all():
        return lo
    v6 = fmix64(hi.astype(np.uint64) * _GOLD ^ lo) | _TOP
    return np.where(v4, lo, v6)


V4_TEXT_CACHE = 4096  # IPv4 texts kept: a flood's heaviest sources come back window after window
_v4_text: dict[int, str] = {}


def key_text(key: int, addr: bytes | None = None) -> str:
    """A key back to its address text; IPv6 keys need the 16 address bytes kept beside them."""
    if not key >> 63:
        text = _v4_text.get(key)
        if text is None:
            if len(_v4_text) >= V4_TEXT_CACHE:  # bounded: spoofed sources rarely come back anyway
                _v4_text.clear()
            text = _v4_text[key] = socket.inet_ntoa((key & 0xFFFFFFFF).to_bytes(4, "big"))
        return text
    if addr is None:
        return f"ipv6-hash-{key:016x}"
    return addr_text(addr)


_DOTTED = np.array([f"{i}." for i in range(256)])  # an octet's text and its dot, by value
_LAST = np.array([str(i) for i in range(256)])
_BYTE = np.uint64(0xFF)


def key_texts(keys: np.ndarray, payload: np.ndarray | None = None) -> list[str]:
    """`key_text` of many keys at once: the IPv4 ones' texts made by numpy from a table of the 256 octets
    (~8x quicker than one `key_text` each: a window's 256 heaviest sources are made into text for their
    countries); IPv6 keys with their address halves from `payload` (rows of two uint64), if given."""
    keys = np.asarray(keys, dtype=np.uint64)
    is6 = (keys >> np.uint64(63)).astype(bool)
    if not is6.any():
        return _v4_texts(keys)
    out = [""] * keys.size
    r4 = np.flatnonzero(~is6)
    for i, text in zip(r4.tolist(), _v4_texts(keys[r4]), strict=True):
        out[i] = text
    r6 = np.flatnonzero(is6)
    if payload is not None and payload.ndim == 2 and payload.shape[1] >= 2:
        raw = payload[r6, :2].astype(">u8").tobytes()  # the halves_bytes of every row at once
        texts6 = [addr_text(raw[j : j + 16]) for j in range(0, len(raw), 16)]
    else:
        texts6 = [key_text(k) for k in keys[r6].tolist()]
    for i, text in zip(r6.tolist(), texts6, strict=True):
        out[i] = text
    return out


_DOTTED_LIST: list[str] = _DOTTED.tolist()
_LAST_LIST: list[str] = _LAST.tolist()
_FEW = 48  # below this many keys, texts from the octet tables in Python: numpy's string calls cost ~25 µs
# whatever the size (a window's top lists of ten are made three times per window)


def _v4_texts(keys: np.ndarray) -> list[str]:
    if keys.size < _FEW:
        d, last = _DOTTED_LIST, _LAST_LIST
        return [d[k >> 24 & 255] + d[k >> 16 & 255] + d[k >> 8 & 255] + last[k & 255] for k in keys.tolist()]
    t = np.strings.add(_DOTTED[(keys >> np.uint64(24)) & _BYTE], _DOTTED[(keys >> np.uint64(16)) & _BYTE])
    t = np.strings.add(np.strings.add(t, _DOTTED[(keys >> np.uint64(8)) & _BYTE]), _LAST[keys & _BYTE])
    return t.tolist()  # type: ignore[no-any-return]


def halves_bytes(hi: int, lo: int) -> bytes:
    return int(hi).to_bytes(8, "big") + int(lo).to_bytes(8, "big")
