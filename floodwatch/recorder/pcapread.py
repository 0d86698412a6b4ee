"""A small reader of pcap and pcapng files (raw frame bytes only), for scanning payloads.

Classic pcap in either byte order with micro- or nanosecond stamps; pcapng with enhanced and simple
packet blocks, any number of sections. A truncated or malformed file raises ValueError at the point
it goes wrong. Only the bytes are returned: dissection is tshark's job.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
_NG_SHB = 0x0A0D0D0A
MAX_BLOCK = 64 * 1024 * 1024


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"truncated file: wanted {n} bytes, got {len(data)}")
    return data


def _pcap(f: BinaryIO, order: str) -> Iterator[bytes]:
    _read(f, 20)  # rest of the global header
    rec = struct.Struct(order + "IIII")
    while True:
        head = f.read(rec.size)
        if not head:
            return
        if len(head) != rec.size:
            raise ValueError("truncated packet record header")
        _, _, incl, _ = rec.unpack(head)
        if incl > MAX_BLOCK:
            raise ValueError(f"packet record of {incl} bytes")
        yield _read(f, incl)


def _pcapng(f: BinaryIO, first: bytes) -> Iterator[bytes]:
    order = "<"
    head = first
    while True:
        if len(head) < 8:
            if not head:
                return
            raise ValueError("truncated block header")
        if struct.unpack("<I", head[:4])[0] == _NG_SHB:
            bom = _read(f, 4)
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            total = struct.unpack(order + "I", head[4:8])[0]
            body = bom + _read(f, _body_len(total, 12) - 4)
        else:
            btype, total = struct.unpack(order + "II", head)
            body = _read(f, _body_len(total, 12))
            if btype == 6 and len(body) >= 20:
                caplen = struct.unpack(order + "I", body[12:16])[0]
                yield body[20 : 20 + caplen]
            elif btype == 3 and len(body) >= 4:
                yield body[4:]
        _read(f, 4)  # trailing total length
        head = f.read(8)


def _body_len(total: int, overhead: int) -> int:
    if total < overhead or total > MAX_BLOCK or total % 4:
        raise ValueError(f"bad pcapng block length {total}")
    return total - overhead


def read_frames(path: str) -> Iterator[bytes]:
    """Every packet's captured bytes, in file order."""
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic in _PCAP_MAGICS:
            yield from _pcap(f, _PCAP_MAGICS[magic])
        elif magic == b"\x0a\x0d\x0d\x0a":
            yield from _pcapng(f, magic + _read(f, 4))
        else:
            raise ValueError("not a pcap or pcapng file")
