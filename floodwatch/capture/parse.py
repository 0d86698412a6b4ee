"""Frame -> packet-record fields, in pure Python with struct, never raising on bad input.

`parse_frame(buf, off, end, wirelen, linktype)` reads the frame in `buf[off:end]` (bytes, memoryview or
mmap: no copy is made except the payload head) and returns a `Parsed` tuple. Anything that does not add
up (short headers, bogus lengths, wrong IP version, endless VLAN or extension header chains) sets
`malformed = 1` and keeps what was read so far; the packet is still counted. An IP header whose own
lengths do not add up (IPv4 IHL < 5, total length under the header or beyond the frame, IPv6 payload
length beyond the frame) or whose version is not the one the ethertype announced (neither 4 nor 6 on
raw IP links) is not an IP packet at all: the record
has no IP version, protocol or addresses (random bytes name no source and no target).

A frame cut by the capture's snaplen (`end - off < wirelen`) is not malformed: lengths are taken from
the IP headers, fields that lie beyond the captured bytes stay zero.
"""

from __future__ import annotations

import mmap
import struct
from typing import NamedTuple, TypeAlias

from floodwatch.records import FRAG_FIRST, FRAG_LATER, FRAG_NONE, PAYLOAD_HEAD, V4_MAPPED_PREFIX

Buf: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

# pcap LINKTYPE_* values we read
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}
# DLT_RAW is 12 or 14 on some BSDs; files written there say so in the header.
LINKTYPE_ALIASES = {12: LINKTYPE_RAW, 14: LINKTYPE_RAW}

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
MAX_VLAN_TAGS = 4
MAX_EXT_HEADERS = 10
# IPv6 extension headers with the generic (len + 1) * 8 layout: hop-by-hop, routing, destination
# options, mobility, HIP, shim6. AH (51) counts in 4-byte units; fragment (44) is 8 bytes.
EXT_GENERIC = frozenset((0, 43, 60, 135, 139, 140))
EXT_AH, EXT_FRAG, NO_NEXT = 51, 44, 59
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6 = 6, 17, 1, 58
UDPLITE, SCTP, DCCP = 136, 132, 33

_U16 = struct.Struct("!H").unpack_from
_VLAN = struct.Struct("!HH").unpack_from
_IP4 = struct.Struct("!BxHxxHBB2x4s4s").unpack_from  # ver/ihl, total length, flags/offset, ttl, proto, src, dst
_IP6 = struct.Struct("!BxxxHBB16s16s").unpack_from  # version, payload length, next header, hop limit, src, dst
_EXT = struct.Struct("!BB").unpack_from
_FRAG6 = struct.Struct("!BxH").unpack_from
_TCP = struct.Struct("!HH8xBB").unpack_from  # sport, dport, data offset, flags
_PORTS = struct.Struct("!HH").unpack_from
_ICMP = struct.Struct("!BB").unpack_from
ZERO16 = bytes(16)


class Parsed(NamedTuple):
    vlan: int
    ipver: int
    proto: int
    flags: int
    ttl: int
    frag: int
    sport: int
    dport: int
    paylen: int
    src: bytes
    dst: bytes
    payload: bytes
    malformed: int
    pkttype: int  # Linux packet type from cooked headers (4 = outgoing), -1 when the link has none


def _bad(vlan: int = 0, pkttype: int = -1) -> Parsed:
    return Parsed(vlan, 0, 0, 0, 0, FRAG_NONE, 0, 0, 0, ZERO16, ZERO16, b"", 1, pkttype)


def _not_ip(vlan: int, pkttype: int) -> Parsed:
    return Parsed(vlan, 0, 0, 0, 0, FRAG_NONE, 0, 0, 0, ZERO16, ZERO16, b"", 0, pkttype)


def parse_frame(buf: Buf, off: int, end: int, wirelen: int, linktype: int) -> Parsed:
    """Parse one frame `buf[off:end]` of `wirelen` bytes on the wire; never raises for bad bytes."""
    pkttype = -1
    try:
        if linktype == LINKTYPE_ETHERNET:
            if end - off < 14:
                return _bad()
            et = _U16(buf, off + 12)[0]
            p = off + 14
        elif linktype == LINKTYPE_LINUX_SLL:
            if end - off < 16:
                return _bad()
            pkttype = _U16(buf, off)[0]
            et = _U16(buf, off + 14)[0]
            p = off + 16
        elif linktype == LINKTYPE_LINUX_SLL2:
            if end - off < 20:
                return _bad()
            et = _U16(buf, off)[0]
            pkttype = buf[off + 10]
            p = off + 20
        elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            return parse_ip(buf, off, end, wirelen, 0, pkttype)
        else:
            return _bad()
        vlan = 0
        if et in VLAN_TPIDS:
            tags = 0
            while et in VLAN_TPIDS:
                if p + 4 > end or tags == MAX_VLAN_TAGS:
                    return _bad(vlan, pkttype)
                tci, et = _VLAN(buf, p)
                if tags == 0:
                    vlan = tci & 0x0FFF
                tags += 1
                p += 4
        if et in (ETH_P_IP, ETH_P_IPV6):
            return parse_ip(buf, p, end, wirelen - (p - off), vlan, pkttype, 4 if et == ETH_P_IP else 6)
        return _not_ip(vlan, pkttype)
    except (struct.error, IndexError):  # a defect above: still never let one frame kill capture
        return _bad(0, pkttype)


def parse_ip(buf: Buf, p: int, end: int, wire_left: int, vlan: int, pkttype: int, expect: int = 0) -> Parsed:
    """The IP packet at `buf[p:end]` (`wire_left` bytes of it were on the wire); `expect` is the version
    the link layer announced (its ethertype), 0 for raw IP links."""
    if p >= end:
        return _bad(vlan, pkttype)
    version = buf[p] >> 4
    if expect and version != expect:
        return _bad(vlan, pkttype)  # the kernel drops these too: not the packet the frame announced
    if version == 4:
        return _ipv4(buf, p, end, wire_left, vlan, pkttype)
    if version == 6:
        return _ipv6(buf, p, end, wire_left, vlan, pkttype)
    return _bad(vlan, pkttype)


def _ipv4(buf: Buf, p: int, end: int, wire_left: int, vlan: int, pkttype: int) -> Parsed:
    if end - p < 20:
        return _bad(vlan, pkttype)
    vihl, totlen, fragw, ttl, proto, s4, d4 = _IP4(buf, p)
    src, dst = V4_MAPPED_PREFIX + s4, V4_MAPPED_PREFIX + d4
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or totlen < ihl or totlen > wire_left:
        return _bad(vlan, pkttype)  # the header does not add up: none of it (addresses) is trusted
    if p + ihl > end:  # options cut by the snaplen
        return Parsed(vlan, 4, proto, 0, ttl, FRAG_NONE, 0, 0, 0, src, dst, b"", 1, pkttype)
    ip_end = p + totlen
    offset = fragw & 0x1FFF
    if offset:
        paylen = totlen - ihl
        return Parsed(vlan, 4, proto, 0, ttl, FRAG_LATER, 0, 0, paylen, src, dst,
                      _head(buf, p + ihl, ip_end, end), 0, pkttype)
    frag = FRAG_FIRST if fragw & 0x2000 else FRAG_NONE
    return _l4(buf, p + ihl, ip_end, end, vlan, 4, proto, ttl, frag, src, dst, pkttype)


def _ipv6(buf: Buf, p: int, end: int, wire_left: int, vlan: int, pkttype: int) -> Parsed:
    if end - p < 40:
        return _bad(vlan, pkttype)
    _, plen, nh, hlim, src, dst = _IP6(buf, p)
    ip_end = p + 40 + plen
    if plen == 0 and nh == 0:  # a jumbogram (its length is in the hop-by-hop header): the frame as it is
        ip_end = p + wire_left
    elif plen == 0:
        return _bad(vlan, pkttype)  # no payload length and no hop-by-hop header: not IPv6
    elif 40 + plen > wire_left:
        return _bad(vlan, pkttype)  # longer than the frame: not an IPv6 header to trust
    q = p + 40
    frag = FRAG_NONE
    for _ in range(MAX_EXT_HEADERS):
        if nh in EXT_GENERIC or nh in (EXT_AH, EXT_FRAG):
            if q + 8 > ip_end or q + 8 > end:
                return Parsed(vlan, 6, nh, 0, hlim, frag, 0, 0, 0, src, dst, b"", 1, pkttype)
            if nh == EXT_FRAG:
                nxt, offw = _FRAG6(buf, q)
                q += 8
                if offw & 0xFFF8:
                    return Parsed(vlan, 6, nxt, 0, hlim, FRAG_LATER, 0, 0, ip_end - q, src, dst,
                                  _head(buf, q, ip_end, end), 0, pkttype)
                if offw & 1:
                    frag = FRAG_FIRST
                nh = nxt
                continue
            nxt, hlen = _EXT(buf, q)
            q += (hlen + 2) * 4 if nh == EXT_AH else (hlen + 1) * 8
            nh = nxt
            continue
        return _l4(buf, q, ip_end, end, vlan, 6, nh, hlim, frag, src, dst, pkttype)
    return Parsed(vlan, 6, nh, 0, hlim, frag, 0, 0, 0, src, dst, b"", 1, pkttype)


def _l4(buf: Buf, q: int, ip_end: int, end: int, vlan: int, ipver: int, proto: int,
        ttl: int, frag: int, src: bytes, dst: bytes, pkttype: int) -> Parsed:
    """Transport header at q; ip_end is where the IP packet ends by its lengths."""
    if q > ip_end:
        return Parsed(vlan, ipver, proto, 0, ttl, frag, 0, 0, 0, src, dst, b"", 1, pkttype)
    hdr_end = min(ip_end, end)
    if proto == PROTO_TCP:
        if q + 14 > hdr_end:
            return _short(buf, q, ip_end, end, vlan, ipver, proto, ttl, frag, src, dst, pkttype, 20)
        sport, dport, doff, flags = _TCP(buf, q)
        hl = (doff >> 4) * 4
        if hl < 20 or q + hl > ip_end:
            return Parsed(vlan, ipver, proto, flags, ttl, frag, sport, dport, 0, src, dst, b"", 1, pkttype)
        pay = q + hl
        return Parsed(vlan, ipver, proto, flags, ttl, frag, sport, dport, min(ip_end - pay, 65535),
                      src, dst, _head(buf, pay, ip_end, end), 0, pkttype)
    if proto in (PROTO_UDP, UDPLITE, SCTP, DCCP):
        hl = 8 if proto != SCTP else 12
        if q + 4 > hdr_end:
            return _short(buf, q, ip_end, end, vlan, ipver, proto, ttl, frag, src, dst, pkttype, hl)
        sport, dport = _PORTS(buf, q)
        if q + hl > ip_end:
            return Parsed(vlan, ipver, proto, 0, ttl, frag, sport, dport, 0, src, dst, b"", 1, pkttype)
        pay = q + hl
        return Parsed(vlan, ipver, proto, 0, ttl, frag, sport, dport, min(ip_end - pay, 65535),
                      src, dst, _head(buf, pay, ip_end, end), 0, pkttype)
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        if q + 2 > hdr_end:
            return _short(buf, q, ip_end, end, vlan, ipver, proto, ttl, frag, src, dst, pkttype, 8)
        itype, code = _ICMP(buf, q)
        if q + 8 > ip_end:
            return Parsed(vlan, ipver, proto, 0, ttl, frag, itype, code, 0, src, dst, b"", 1, pkttype)
        pay = q + 8
        return Parsed(vlan, ipver, proto, 0, ttl, frag, itype, code, min(ip_end - pay, 65535),
                      src, dst, _head(buf, pay, ip_end, end), 0, pkttype)
    return Parsed(vlan, ipver, proto, 0, ttl, frag, 0, 0, min(ip_end - q, 65535), src, dst,
                  _head(buf, q, ip_end, end), 0, pkttype)


def _short(buf: Buf, q: int, ip_end: int, end: int, vlan: int, ipver: int, proto: int,
           ttl: int, frag: int, src: bytes, dst: bytes, pkttype: int, need: int) -> Parsed:
    """The transport header is not all there: malformed if the IP lengths say so, else cut by snaplen."""
    bad = 1 if q + need > ip_end or end >= ip_end else 0
    return Parsed(vlan, ipver, proto, 0, ttl, frag, 0, 0, 0, src, dst, b"", bad, pkttype)


def _head(buf: Buf, start: int, ip_end: int, end: int) -> bytes:
    stop = min(start + PAYLOAD_HEAD, ip_end, end)
    return bytes(buf[start:stop]) if stop > start else b""
