"""Payload signatures: built-in protocol markers plus the config's IOC patterns, matched in bulk.

`SignatureMatcher.count(records)` takes a numpy array of RECORD_DTYPE (a bounded sample of one window)
and returns `{signature name: matching records}` (unscaled; the caller scales by its sample rate).
Each record counts at most once per name.

Two kinds of signature:
* content signatures (byte strings anywhere, or at the start, of the 32-byte payload head): all of them,
  built-in and IOC, go into ONE Aho-Corasick automaton (pyahocorasick). The payload heads of the whole
  sample are laid end to end (fixed 32-byte stride) and scanned once; each hit maps back to its record
  by position, and port / protocol / offset constraints are then checked on the hits with numpy.
* header signatures (fixed bytes at fixed offsets, e.g. NTP mode 7 + MON_GETLIST, DNS QR bit): numpy
  masks over the whole sample at once, one per signature.
No pattern is ever tried packet by packet.

Names: built-in protocol names (`ntp_monlist`, `memcached`, `ssdp`, `cldap`, `dns_response`, ...),
`botnet:<name>` for known attack-tool payload markers, `ioc:<name>` for config IOC patterns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ahocorasick
import numpy as np

from floodwatch.records import FRAG_LATER, PAYLOAD_HEAD, PROTO_TCP, PROTO_UDP

ANY = 0  # protocol wildcard
WEB_PORTS = frozenset({80, 81, 443, 3000, 8000, 8008, 8080, 8081, 8443, 8888})
HTTP_METHODS = ("GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ")
MAX_IOC_PATTERNS = 10_000
MAX_PATTERN_BYTES = PAYLOAD_HEAD  # longer patterns can never match a 32-byte head

# RFC 864 character generator: each line is a window of this 94-character rotating sequence. Any 8
# consecutive positions of the cycle hold a multiple of 8, so every 32-byte head of a line contains one
# of the 16-character windows starting there (two hits per packet at most, not twenty).
_CHARGEN = "".join(chr(c) for c in range(33, 127))
_CHARGEN_WINDOWS = tuple((_CHARGEN * 2)[i : i + 16].encode() for i in range(0, len(_CHARGEN), 8))


@dataclass(frozen=True)
class ContentSig:
    """Byte strings matched by the automaton; `offset` -1 means anywhere in the head."""

    name: str
    patterns: tuple[bytes, ...]
    proto: int = ANY
    sports: frozenset[int] | None = None  # the record's source port must be in it (None: any)
    dports: frozenset[int] | None = None
    offset: int = -1


@dataclass(frozen=True)
class HeaderSig:
    """Fixed bytes at fixed offsets: any alternative of (offset, mask, value) checks that all hold."""

    name: str
    proto: int
    sports: frozenset[int] | None
    dports: frozenset[int] | None
    alternatives: tuple[tuple[tuple[int, int, int], ...], ...]


def _ports(*ports: int) -> frozenset[int]:
    return frozenset(ports)


BUILTIN_CONTENT: tuple[ContentSig, ...] = (
    ContentSig("memcached", (b"STAT ", b"VALUE ", b"END\r\n"), PROTO_UDP, sports=_ports(11211)),
    ContentSig("memcached_request", (b"stats", b"gets ", b"get "), PROTO_UDP, dports=_ports(11211)),
    ContentSig("ssdp", (b"HTTP/1.1 200 OK", b"NOTIFY * HTTP/1.1"), PROTO_UDP, sports=_ports(1900)),
    ContentSig("ssdp_msearch", (b"M-SEARCH * HTTP/1.1",), PROTO_UDP, dports=_ports(1900)),
    ContentSig("cldap_request", (b"objectclass", b"objectClass"), PROTO_UDP, dports=_ports(389)),
    ContentSig("ws_discovery", (b"<?xml", b"Envelope"), PROTO_UDP, sports=_ports(3702)),
    ContentSig("sip", (b"SIP/2.0 ",), PROTO_UDP, sports=_ports(5060)),
    ContentSig("steam", (b"\xff\xff\xff\xffI", b"\xff\xff\xff\xffm"), PROTO_UDP, sports=_ports(27015)),
    ContentSig(
        "chargen",
        _CHARGEN_WINDOWS,
        PROTO_UDP,
        sports=_ports(19),
    ),
    ContentSig(
        "http_request", tuple(m.encode() for m in HTTP_METHODS), PROTO_TCP, dports=WEB_PORTS, offset=0
    ),
    # known attack-tool payloads (botnet_detected)
    ContentSig("botnet:loic", (b"A cat is fine too",)),
    ContentSig("botnet:vse_flood", (b"TSource Engine Query",), PROTO_UDP),
    ContentSig("botnet:mirai", (b"/bin/busybox MIRAI", b"/bin/busybox ECCHI")),
    ContentSig("botnet:hoic", (b"HOIC",), PROTO_TCP, dports=WEB_PORTS),
)

BUILTIN_HEADER: tuple[HeaderSig, ...] = (
    # NTP mode 7 (private) request/response with MON_GETLIST (20) or MON_GETLIST_1 (42)
    HeaderSig(
        "ntp_monlist",
        PROTO_UDP,
        _ports(123),
        None,
        (((0, 0x07, 0x07), (3, 0xFF, 0x2A)), ((0, 0x07, 0x07), (3, 0xFF, 0x14))),
    ),
    HeaderSig(
        "ntp_monlist_request",
        PROTO_UDP,
        None,
        _ports(123),
        (((0, 0x87, 0x07), (3, 0xFF, 0x2A)), ((0, 0x87, 0x07), (3, 0xFF, 0x14))),
    ),
    # DNS answer / query: QR bit, opcode 0 (standard query) and one question (what resolvers send and
    # answer), not the QR bit alone, which half of all random payloads have
    HeaderSig("dns_response", PROTO_UDP, _ports(53), None, (((2, 0xF8, 0x80), (4, 0xFF, 0x00), (5, 0xFF, 0x01)),)),
    HeaderSig("dns_query", PROTO_UDP, None, _ports(53), (((2, 0xF8, 0x00), (4, 0xFF, 0x00), (5, 0xFF, 0x01)),)),
    HeaderSig("mdns_response", PROTO_UDP, _ports(5353), None, (((2, 0x80, 0x80),),)),
    HeaderSig("netbios_response", PROTO_UDP, _ports(137), None, (((2, 0x80, 0x80),),)),
    HeaderSig("cldap", PROTO_UDP, _ports(389), None, (((0, 0xFF, 0x30),),)),
    HeaderSig("snmp_response", PROTO_UDP, _ports(161), None, (((0, 0xFF, 0x30),),)),
    HeaderSig("portmap_response", PROTO_UDP, _ports(111), None, (((7, 0xFF, 0x01), (6, 0xFF, 0x00)),)),
    HeaderSig("coap", PROTO_UDP, _ports(5683), None, (((0, 0xC0, 0x40),),)),
    HeaderSig("ubiquiti", PROTO_UDP, _ports(10001), None, (((0, 0xFF, 0x01), (1, 0xFF, 0x00)),)),
    HeaderSig("bacnet", PROTO_UDP, _ports(47808), None, (((0, 0xFF, 0x81),),)),
    HeaderSig("mssql_ssrp", PROTO_UDP, _ports(1434), None, (((0, 0xFF, 0x05),),)),
    HeaderSig("slp", PROTO_UDP, _ports(427), None, (((0, 0xFF, 0x02),),)),
    HeaderSig("rip", PROTO_UDP, _ports(520), None, (((0, 0xFF, 0x02),),)),
    # OpenVPN P_CONTROL_HARD_RESET_SERVER_V2 (opcode 8 << 3)
    HeaderSig("openvpn", PROTO_UDP, _ports(1194), None, (((0, 0xF8, 0x40),),)),
)

_HEX_MARKED = re.compile(r"^(hex:|0x|\\x)", re.IGNORECASE)
_HEX_BODY = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def parse_ioc(item: Any) -> tuple[str, list[bytes]]:
    """One IOC pattern (object `{"pattern", "name", ...}` or plain string) -> (name, byte patterns).

    Text is matched as UTF-8 bytes. Hex is recognised when marked (`hex:...`, `0x...`, `\\xNN...`) or
    written as space-separated byte pairs (`de ad be ef`); then only the bytes are matched. An unmarked
    run of hex digits (`cafebabe`) is ambiguous, so both its text and its bytes are matched.
    Raises ValueError for an empty or unusable pattern.
    """
    if isinstance(item, Mapping):
        raw = item.get("pattern")
        name = str(item.get("name") or raw or "")
    else:
        raw, name = item, str(item)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"IOC pattern {item!r} is not a non-empty string")
    text = raw.strip()
    marked = bool(_HEX_MARKED.match(text))
    spaced = " " in text and all(len(p) == 2 for p in text.split())
    body = re.sub(r"(?i)^hex:", "", text)
    body = re.sub(r"(?i)0x|\\x|\s", "", body) if (marked or spaced) else text
    out: list[bytes] = []
    if _HEX_BODY.match(body):
        out.append(bytes.fromhex(body))
    elif marked:
        raise ValueError(f"IOC pattern {raw!r} is marked as hex but is not hex")
    if not (marked or spaced):
        out.append(text.encode())
    out = [p[:MAX_PATTERN_BYTES] for p in out if p]
    if not out:
        raise ValueError(f"IOC pattern {raw!r} is empty")
    return name[:80], out


class SignatureMatcher:
    """Counts built-in signatures and IOC patterns in the payload heads of a record sample."""

    def __init__(self, content: Iterable[ContentSig], header: Iterable[HeaderSig] = BUILTIN_HEADER) -> None:
        self.content = tuple(content)
        self.header = tuple(header)
        self.rejected_iocs: list[str] = []  # why config patterns were refused (for the log)
        self._automaton = ahocorasick.Automaton()
        keys: dict[str, list[int]] = {}
        for i, sig in enumerate(self.content):
            for pat in sig.patterns:
                keys.setdefault(pat.decode("latin-1"), []).append(i)
        for key, sig_ids in keys.items():
            self._automaton.add_word(key, (len(key), tuple(sig_ids)))
        self._has_words = bool(keys)
        if self._has_words:
            self._automaton.make_automaton()

    @classmethod
    def default(cls) -> SignatureMatcher:
        return cls(BUILTIN_CONTENT)

    @classmethod
    def with_iocs(cls, patterns: Iterable[Any]) -> SignatureMatcher:
        """Built-ins plus config IOC patterns; unusable patterns are skipped and listed in `rejected_iocs`."""
        sigs = list(BUILTIN_CONTENT)
        rejected: list[str] = []
        for n, item in enumerate(patterns):
            if n >= MAX_IOC_PATTERNS:
                rejected.append(f"more than {MAX_IOC_PATTERNS} patterns: the rest ignored")
                break
            try:
                name, pats = parse_ioc(item)
            except ValueError as e:
                rejected.append(str(e))
                continue
            sigs.append(ContentSig(f"ioc:{name}", tuple(pats)))
        matcher = cls(sigs)
        matcher.rejected_iocs = rejected
        return matcher

    @property
    def names(self) -> list[str]:
        return sorted({s.name for s in self.content} | {s.name for s in self.header})

    def count(self, records: np.ndarray) -> dict[str, int]:
        """`{name: records matching}` for a numpy array of RECORD_DTYPE; names with no match are left out."""
        if len(records) == 0:
            return {}
        records = records[(records["paylen"] > 0) & (records["frag"] != FRAG_LATER)]
        if len(records) == 0:
            return {}
        out: dict[str, int] = {}
        if self._has_words:
            self._count_content(records, out)
        self._count_header(records, out)
        return out

    def _count_content(self, records: np.ndarray, out: dict[str, int]) -> None:
        heads = np.ascontiguousarray(records["payload"]).view(np.uint8).reshape(-1)
        text = heads.tobytes().decode("latin-1")
        ends: list[int] = []
        hit_sigs: list[tuple[int, ...]] = []
        lens: list[int] = []
        for end, (length, sig_ids) in self._automaton.iter(text):
            ends.append(end)
            lens.append(length)
            hit_sigs.append(sig_ids)
        if not ends:
            return
        end = np.asarray(ends, dtype=np.int64)
        start = end - np.asarray(lens, dtype=np.int64) + 1
        rec = start // PAYLOAD_HEAD
        valid = (end // PAYLOAD_HEAD == rec) & (end % PAYLOAD_HEAD < records["paylen"][rec])
        self._apply_constraints(records, rec, start % PAYLOAD_HEAD, valid, hit_sigs, out)

    def _apply_constraints(
        self,
        records: np.ndarray,
        rec: np.ndarray,
        offset: np.ndarray,
        valid: np.ndarray,
        hit_sigs: list[tuple[int, ...]],
        out: dict[str, int],
    ) -> None:
        per_sig: dict[int, list[int]] = {}
        for h in np.flatnonzero(valid).tolist():
            for s in hit_sigs[h]:
                per_sig.setdefault(s, []).append(h)
        matched: dict[str, set[int]] = {}
        for s, hits in per_sig.items():
            sig = self.content[s]
            idx = np.asarray(hits, dtype=np.int64)
            r = rec[idx]
            ok = _port_proto_mask(records[r], sig.proto, sig.sports, sig.dports)
            if sig.offset >= 0:
                ok &= offset[idx] == sig.offset
            if ok.any():
                matched.setdefault(sig.name, set()).update(np.unique(r[ok]).tolist())
        for name, recs in matched.items():
            out[name] = out.get(name, 0) + len(recs)

    def _count_header(self, records: np.ndarray, out: dict[str, int]) -> None:
        heads = np.ascontiguousarray(records["payload"]).view(np.uint8).reshape(len(records), PAYLOAD_HEAD)
        # which protocols and ports occur at all: a signature none of whose ports occur costs nothing
        protos, sports, dports = (_present(records[c]) for c in ("proto", "sport", "dport"))
        for sig in self.header:
            if ((sig.proto != ANY and not _any_in(protos, (sig.proto,)))
                    or (sig.sports is not None and not _any_in(sports, sig.sports))
                    or (sig.dports is not None and not _any_in(dports, sig.dports))):
                continue
            base = _port_proto_mask(records, sig.proto, sig.sports, sig.dports)
            if not base.any():
                continue
            any_alt = np.zeros(len(records), dtype=bool)
            for checks in sig.alternatives:
                m = base & (records["paylen"] > max(off for off, _, _ in checks))
                for off, mask, value in checks:
                    m &= (heads[:, off] & mask) == value
                any_alt |= m
            n = int(any_alt.sum())
            if n:
                out[sig.name] = out.get(sig.name, 0) + n


def _present(column: np.ndarray) -> set[int] | np.ndarray:
    """Which values of an unsigned 8/16-bit column (a protocol or port number) occur: a set for a few
    records, a boolean array indexed by value for many."""
    if len(column) <= 512:
        return set(column.tolist())
    return np.bincount(column, minlength=256) > 0


def _any_in(present: set[int] | np.ndarray, values: Iterable[int]) -> bool:
    if isinstance(present, set):
        return not present.isdisjoint(values)
    return any(v < len(present) and present[v] for v in values)


def _port_proto_mask(
    records: np.ndarray, proto: int, sports: frozenset[int] | None, dports: frozenset[int] | None
) -> np.ndarray:
    mask = np.ones(len(records), dtype=bool)
    if proto != ANY:
        mask &= records["proto"] == proto
    if sports is not None:
        mask &= _in(records["sport"], sports)
    if dports is not None:
        mask &= _in(records["dport"], dports)
    return mask


def _in(column: np.ndarray, values: frozenset[int]) -> np.ndarray:
    """np.isin for a signature's few ports: one comparison each (np.isin costs ~40 µs a call on the
    aggregator's 64-record samples, ten times that)."""
    if len(values) > 16:
        return np.isin(column, list(values))
    mask = np.zeros(len(column), dtype=bool)
    for v in values:
        mask |= column == v
    return mask
