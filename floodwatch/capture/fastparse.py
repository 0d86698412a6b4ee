"""Many frames -> record rows at once, with numpy; the per-packet parser only for the unusual ones.

`parse_many(buf, offs, caps, wires, linktype)` parses the frames `buf[offs[i]:offs[i] + caps[i]]` and
returns RECORD_DTYPE rows (ts and iface left zero for the caller; direction from cooked headers, else
unknown). The common shapes are
parsed column-wise: Ethernet with at most one VLAN tag, Linux cooked v1/v2, raw IP; IPv4 with or
without options, fragments; IPv6 without extension headers; TCP, UDP, ICMP, other protocols. Every
other frame (IPv6 extension headers, QinQ, anything short or inconsistent) goes to parse.parse_frame,
so the rows are identical to the per-packet parser's (tests/capture check this on mutated frames).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from floodwatch.capture import parse as P
from floodwatch.records import DIR_IN, DIR_OUT, DIR_UNKNOWN, PAYLOAD_HEAD, RECORD_DTYPE, RECORD_SIZE, RECORD_STRUCT

PKTTYPE_OUTGOING = 4
SMALL = 48  # fewer frames than this are parsed one by one
H = 96  # header bytes gathered per frame: enough for L2 + IPv4 with options + the TCP flags
_AR_P = np.arange(PAYLOAD_HEAD, dtype=np.int64)
_F: dict[str, int] = {name: spec[1] for name, spec in (RECORD_DTYPE.fields or {}).items()}
_V4PFX = np.frombuffer(P.V4_MAPPED_PREFIX, dtype=np.uint8)
_EXT6 = np.zeros(256, dtype=bool)  # lookup tables by protocol number (np.isin costs ~0.1 ms a call)
_EXT6[sorted(P.EXT_GENERIC | {P.EXT_AH, P.EXT_FRAG})] = True
_PORT8 = np.zeros(256, dtype=bool)
_PORT8[[P.PROTO_UDP, P.UDPLITE, P.DCCP]] = True
_U16BE = np.dtype(">u2")


def _be16(m: np.ndarray, rows: np.ndarray, col: np.ndarray | int) -> np.ndarray:
    """Big-endian 16-bit fields of the header matrix at (rows, col): one gather from a view of every byte
    position as the 16-bit value starting there (~2x quicker than two byte gathers, shift and or)."""
    flat = m.reshape(-1)
    return np.ndarray((flat.size - 1,), _U16BE, flat, 0, (1,))[rows * m.shape[1] + col].astype(np.int64)


def _b(m: np.ndarray, rows: np.ndarray, col: np.ndarray | int) -> np.ndarray:
    return m.reshape(-1)[rows * m.shape[1] + col].astype(np.int64)


def _copy(m: np.ndarray, rows: np.ndarray, col: np.ndarray, width: int, u8: np.ndarray, field: int) -> None:
    """`width` header bytes of each row from `col` into the record bytes u8[rows, field:field + width], as
    one gather of `width`-byte items (an address: no index matrix)."""
    flat, item = m.reshape(-1), np.dtype(f"V{width}")
    src = np.ndarray((flat.size - width + 1,), item, flat, 0, (1,))
    np.ndarray((u8.shape[0],), item, u8, field, (u8.shape[1],))[rows] = src[rows * m.shape[1] + col]


def _is_tpid(et: np.ndarray) -> np.ndarray:
    return (et == 0x8100) | (et == 0x88A8) | (et == 0x9100) | (et == 0x9200)


def _l2(m: np.ndarray, caps: np.ndarray, linktype: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> (l3 offset, ethertype, vlan, slow mask) per frame."""
    n = len(caps)
    allr = np.arange(n)
    vlan = np.zeros(n, dtype=np.int64)
    if linktype == P.LINKTYPE_ETHERNET:
        et = _be16(m, allr, 12)
        l3 = np.full(n, 14, dtype=np.int64)
        tagged = _is_tpid(et)
        if tagged.any():
            vlan[tagged] = _be16(m, allr[tagged], 14) & 0x0FFF
            et[tagged] = _be16(m, allr[tagged], 16)
            l3[tagged] = 18
        slow = caps < l3
        slow |= tagged & _is_tpid(et)  # QinQ and deeper
    elif linktype in (P.LINKTYPE_LINUX_SLL, P.LINKTYPE_LINUX_SLL2):
        sll2 = linktype == P.LINKTYPE_LINUX_SLL2
        et = _be16(m, allr, 0 if sll2 else 14)
        l3 = np.full(n, 20 if sll2 else 16, dtype=np.int64)
        slow = (caps < l3) | _is_tpid(et)
    else:  # raw IP: the version nibble is the "ethertype"
        ver = m[:, 0] >> 4
        et = np.where(ver == 4, P.ETH_P_IP, np.where(ver == 6, P.ETH_P_IPV6, -1)).astype(np.int64)
        l3 = np.zeros(n, dtype=np.int64)
        slow = (caps < 1) | (et < 0)
    return l3, et, vlan, slow


def _directions(m: np.ndarray, linktype: int, n: int) -> np.ndarray | int:
    """Cooked captures record the packet type (4 = outgoing); other links say nothing."""
    if linktype == P.LINKTYPE_LINUX_SLL:
        pkttype = (m[:, 0].astype(np.int64) << 8) | m[:, 1]
    elif linktype == P.LINKTYPE_LINUX_SLL2:
        pkttype = m[:, 10].astype(np.int64)
    else:
        return DIR_UNKNOWN
    return np.where(pkttype == PKTTYPE_OUTGOING, DIR_OUT, DIR_IN)


def gather(flat: np.ndarray, offs: np.ndarray, width: int) -> np.ndarray:
    """(len(offs), width) bytes of `flat` from each offset (past its end: the last byte repeated; callers
    check lengths). Rows of a sliding-window view where they fit (a row copy each, ~7x quicker than an
    index matrix)."""
    n, last = len(offs), len(flat) - width
    if n == 0 or last < 0:
        return flat.take(offs[:, None] + np.arange(width, dtype=np.int64), mode="clip")
    fits = (offs >= 0) & (offs <= last)
    if fits.all():
        return sliding_window_view(flat, width)[offs]
    out = np.empty((n, width), dtype=np.uint8)
    out[fits] = sliding_window_view(flat, width)[offs[fits]]
    out[~fits] = flat.take(offs[~fits, None] + np.arange(width, dtype=np.int64), mode="clip")
    return out


def parse_many(buf: P.Buf, offs: np.ndarray, caps: np.ndarray, wires: np.ndarray,
               linktype: int, flat: np.ndarray | None = None) -> np.ndarray:
    """RECORD_DTYPE rows for the frames at offs (int64 arrays); `flat` = np.frombuffer(buf, uint8) if known."""
    n = len(offs)
    out_buf = bytearray(n * RECORD_SIZE)
    out = np.frombuffer(out_buf, dtype=RECORD_DTYPE)
    if n == 0:
        return out
    if n < SMALL:  # numpy's fixed cost per call is worth more than a few packets' parsing
        _scalar(buf, offs, caps, wires, linktype, np.arange(n), out_buf)
        return out
    if flat is None:
        flat = np.frombuffer(buf, dtype=np.uint8)
    m = gather(flat, offs, H)
    l3, et, vlan, slow = _l2(m, caps, linktype)
    out["wirelen"] = wires
    out["vlan"] = vlan
    out["direction"] = _directions(m, linktype, n)
    bad = np.zeros(n, dtype=bool)  # not IP after all: malformed rows with no IP fields, set here
    if linktype not in (P.LINKTYPE_ETHERNET, P.LINKTYPE_LINUX_SLL, P.LINKTYPE_LINUX_SLL2):
        bad = (caps >= 1) & (et < 0)  # raw IP whose version is neither 4 nor 6 (or an unknown link)
        slow &= ~bad
    is4 = (et == P.ETH_P_IP) & ~slow
    is6 = (et == P.ETH_P_IPV6) & ~slow
    u8 = np.frombuffer(out_buf, dtype=np.uint8).reshape(n, RECORD_SIZE)
    slow |= _fill_ip(m, flat, offs, caps, wires, l3, is4, is6, out, u8, bad)
    out["malformed"][bad] = 1
    slow_rows = np.flatnonzero(slow)
    if len(slow_rows):
        _scalar(buf, offs, caps, wires, linktype, slow_rows, out_buf)
    return out


def _fill_ip(m: np.ndarray, flat: np.ndarray, offs: np.ndarray, caps: np.ndarray, wires: np.ndarray,
             l3: np.ndarray, is4: np.ndarray, is6: np.ndarray, out: np.ndarray, u8: np.ndarray,
             bad: np.ndarray) -> np.ndarray:
    """Fill IP/L4 columns of the fast rows; returns the rows that need the per-packet parser. Rows whose
    IP header does not add up are marked in `bad` (no IP fields: parse.parse_frame's `_bad`)."""
    n = len(offs)
    slow = np.zeros(n, dtype=bool)
    r4, r6 = np.flatnonzero(is4), np.flatnonzero(is6)
    l4 = np.zeros(n, dtype=np.int64)
    ip_end = np.zeros(n, dtype=np.int64)
    proto = np.zeros(n, dtype=np.int64)
    later = np.zeros(n, dtype=bool)
    if len(r4):
        slow |= _ipv4(m, r4, caps, wires, l3, l4, ip_end, proto, later, out, u8, bad)
    if len(r6):
        slow |= _ipv6(m, r6, caps, wires, l3, l4, ip_end, proto, out, u8, bad)
    ipr = np.flatnonzero((is4 | is6) & ~slow & ~bad)
    if len(ipr) == 0:
        return slow
    pay = l4.copy()
    slow |= _transport(m, ipr[~later[ipr]], caps, l4, ip_end, proto, pay, out)
    ok = ipr[~slow[ipr]]
    out["paylen"][ok] = np.minimum(ip_end[ok] - pay[ok], 65535)
    stop = np.minimum(np.minimum(pay[ok] + PAYLOAD_HEAD, ip_end[ok]), caps[ok]) - pay[ok]
    head = gather(flat, offs[ok] + pay[ok], PAYLOAD_HEAD)
    head[_AR_P[None, :] >= stop[:, None]] = 0
    po = _F["payload"]
    u8[ok, po : po + PAYLOAD_HEAD] = head
    return slow


def _header_bad(version: np.ndarray, own: int, lengths_bad: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Rows whose (fully captured) IP header is not one: another version than the link announced, or
    lengths that do not add up."""
    return whole & ((version != own) | lengths_bad)


def _ipv4(m: np.ndarray, r: np.ndarray, caps: np.ndarray, wires: np.ndarray, l3: np.ndarray, l4: np.ndarray,
          ip_end: np.ndarray, proto: np.ndarray, later: np.ndarray, out: np.ndarray, u8: np.ndarray,
          not_ip: np.ndarray) -> np.ndarray:
    slow = np.zeros(len(caps), dtype=bool)
    b = l3[r]
    vihl = _b(m, r, b)
    ihl = (vihl & 0x0F) * 4
    totlen = _be16(m, r, b + 2)
    hdr = _header_bad(vihl >> 4, 4, (ihl < 20) | (totlen < ihl) | (totlen > wires[r] - b), caps[r] >= b + 20)
    not_ip[r[hdr]] = True
    bad = ((vihl >> 4) != 4) | (caps[r] < b + 20) | (ihl < 20) | (totlen < ihl) | (totlen > wires[r] - b)
    bad |= caps[r] < b + ihl
    slow[r[bad & ~hdr]] = True
    r, b, ihl, totlen = r[~bad], b[~bad], ihl[~bad], totlen[~bad]
    fragw = _be16(m, r, b + 6)
    out["ipver"][r] = 4
    out["ttl"][r] = m[r, b + 8]
    proto[r] = _b(m, r, b + 9)
    out["proto"][r] = proto[r]
    so, do = _F["src"], _F["dst"]
    u8[r, so + 10 : so + 12] = 0xFF
    u8[r, do + 10 : do + 12] = 0xFF
    _copy(m, r, b + 12, 4, u8, so + 12)
    _copy(m, r, b + 16, 4, u8, do + 12)
    l4[r] = b + ihl
    ip_end[r] = b + totlen
    is_later = (fragw & 0x1FFF) != 0
    later[r[is_later]] = True
    out["frag"][r[is_later]] = P.FRAG_LATER
    out["frag"][r[~is_later & ((fragw & 0x2000) != 0)]] = P.FRAG_FIRST
    return slow


def _ipv6(m: np.ndarray, r: np.ndarray, caps: np.ndarray, wires: np.ndarray, l3: np.ndarray, l4: np.ndarray,
          ip_end: np.ndarray, proto: np.ndarray, out: np.ndarray, u8: np.ndarray, not_ip: np.ndarray) -> np.ndarray:
    slow = np.zeros(len(caps), dtype=bool)
    b = l3[r]
    plen = _be16(m, r, b + 4)
    nh = _b(m, r, b + 6)
    hdr = _header_bad(m[r, b] >> 4, 6, (plen != 0) & (40 + plen > wires[r] - b), caps[r] >= b + 40)
    not_ip[r[hdr]] = True
    bad = ((m[r, b] >> 4) != 6) | (caps[r] < b + 40) | (plen == 0) | (40 + plen > wires[r] - b)
    bad |= _EXT6[nh]
    slow[r[bad & ~hdr]] = True
    r, b, plen, nh = r[~bad], b[~bad], plen[~bad], nh[~bad]
    out["ipver"][r] = 6
    out["ttl"][r] = m[r, b + 7]
    proto[r] = nh
    out["proto"][r] = nh
    so, do = _F["src"], _F["dst"]
    _copy(m, r, b + 8, 16, u8, so)
    _copy(m, r, b + 24, 16, u8, do)
    l4[r] = b + 40
    ip_end[r] = b + 40 + plen
    return slow


def _transport(m: np.ndarray, r: np.ndarray, caps: np.ndarray, l4: np.ndarray, ip_end: np.ndarray,
               proto: np.ndarray, pay: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Ports, flags and payload start of the rows r (not later fragments)."""
    slow = np.zeros(len(caps), dtype=bool)
    q, pr = l4[r], proto[r]
    hdr_end = np.minimum(ip_end[r], caps[r])
    tcp = pr == P.PROTO_TCP
    p8 = _PORT8[pr]
    sctp = pr == P.SCTP
    icmp = (pr == P.PROTO_ICMP) | (pr == P.PROTO_ICMPV6)
    need = np.where(tcp, 14, np.where(p8 | sctp, 4, np.where(icmp, 2, 0)))
    hl = np.where(tcp, 0, np.where(p8 | icmp, 8, np.where(sctp, 12, 0)))
    bad = (q + need > hdr_end) | (q > ip_end[r]) | (q + hl > ip_end[r])
    t = tcp & ~bad
    qt = np.minimum(q, H - 14)  # keep the gathers inside the header matrix (bad rows only)
    doff = (_b(m, r, qt + 12) >> 4) * 4
    bad |= tcp & ((doff < 20) | (q + doff > ip_end[r]))
    t &= ~bad
    slow[r[bad]] = True
    ports = (tcp | p8 | sctp) & ~bad
    rp, qp = r[ports], q[ports]
    out["sport"][rp] = _be16(m, rp, qp)
    out["dport"][rp] = _be16(m, rp, qp + 2)
    ri, qi = r[icmp & ~bad], q[icmp & ~bad]
    out["sport"][ri] = m[ri, qi]
    out["dport"][ri] = m[ri, qi + 1]
    out["flags"][r[t]] = m[r[t], q[t] + 13]
    pay[r] = q + np.where(tcp, doff, hl)
    return slow


def _scalar(buf: P.Buf, offs: np.ndarray, caps: np.ndarray, wires: np.ndarray,
            linktype: int, rows: np.ndarray, out_buf: bytearray) -> None:
    pack = RECORD_STRUCT.pack_into
    parse = P.parse_frame
    for i, o, c, w in zip(rows.tolist(), offs[rows].tolist(), caps[rows].tolist(), wires[rows].tolist(),
                          strict=True):
        p = parse(buf, o, o + c, w, linktype)
        d = DIR_UNKNOWN if p.pkttype < 0 else DIR_OUT if p.pkttype == PKTTYPE_OUTGOING else DIR_IN
        pack(out_buf, i * RECORD_SIZE, 0.0, w, p.sport, p.dport, p.paylen, p.vlan, d, p.ipver,
             p.proto, p.flags, p.ttl, p.frag, 0, p.malformed, p.src, p.dst, p.payload)
