"""The frame parser on hand-built frames of every kind, and a million random and mutated frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.parse import parse_frame
from floodwatch.records import FRAG_FIRST, FRAG_LATER, FRAG_NONE, RECORD_DTYPE, RECORD_SIZE, addr_text
from tests.capture.capture_support import eth, ext6, frag6, icmp, ipv4, ipv6, tcp, udp

PAY = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"


def one(frame: bytes, linktype: int = 1, wirelen: int | None = None, cap: int | None = None) -> np.void:
    """Parse with both parsers; they must agree byte for byte. Returns the record."""
    data = frame[:cap] if cap is not None else frame
    wl = wirelen if wirelen is not None else len(frame)
    k = 64  # enough frames for the column-wise path (fewer go one by one)
    rows = parse_many(data * k, np.arange(k) * len(data), np.full(k, len(data)), np.full(k, wl), linktype)
    assert np.all(rows == rows[0])
    p = parse_frame(data, 0, len(data), wl, linktype)
    assert (rows["sport"][0], rows["dport"][0], rows["paylen"][0], rows["vlan"][0], rows["ipver"][0],
            rows["proto"][0], rows["flags"][0], rows["ttl"][0], rows["frag"][0], rows["malformed"][0]) == (
        p.sport, p.dport, p.paylen, p.vlan, p.ipver, p.proto, p.flags, p.ttl, p.frag, p.malformed)
    return rows[0]


def test_ipv4_tcp_with_options_and_payload() -> None:
    r = one(eth(ipv4("198.51.100.7", "10.10.10.10", 6, tcp(40000, 80, 0x18, PAY, options=b"\x01" * 12),
                     ttl=242, options=b"\x01\x01\x01\x00")))
    assert (r["ipver"], r["proto"], r["sport"], r["dport"], r["flags"], r["ttl"]) == (4, 6, 40000, 80, 0x18, 242)
    assert addr_text(r["src"]) == "198.51.100.7" and addr_text(r["dst"]) == "10.10.10.10"
    assert r["paylen"] == len(PAY) and r["payload"] == PAY[:32] and r["malformed"] == 0


def test_udp_icmp_and_other_protocols() -> None:
    r = one(eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(53, 1234, b"x" * 100))))
    assert (r["proto"], r["sport"], r["dport"], r["paylen"]) == (17, 53, 1234, 100)
    r = one(eth(ipv4("1.2.3.4", "5.6.7.8", 1, icmp(3, 3, b"quoted"))))
    assert (r["proto"], r["sport"], r["dport"], r["payload"]) == (1, 3, 3, b"quoted")
    r = one(eth(ipv4("1.2.3.4", "5.6.7.8", 47, b"\x00\x00\x08\x00" + b"g" * 40)))  # GRE: counted by number
    assert (r["proto"], r["sport"], r["dport"], r["paylen"], r["malformed"]) == (47, 0, 0, 44, 0)
    r = one(eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), ethertype=0x0806))  # ARP: not IP, not bad
    assert (r["ipver"], r["malformed"]) == (0, 0)


def test_vlan_and_qinq() -> None:
    r = one(eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1, 2)), tags=((0x8100, 42),)))
    assert (r["vlan"], r["proto"], r["dport"]) == (42, 17, 2)
    r = one(eth(ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 443, 2)), tags=((0x88A8, 100), (0x8100, 7))))
    assert (r["vlan"], r["proto"], r["dport"], r["flags"]) == (100, 6, 443, 2)
    r = one(eth(b"", tags=((0x8100, 1),) * 6))  # endless tags
    assert r["malformed"] == 1


def test_ipv4_fragments_first_and_later() -> None:
    first = one(eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(53, 9, b"a" * 1000)[:600], mf=True, totlen=620)))
    assert (first["frag"], first["sport"], first["dport"], first["malformed"]) == (FRAG_FIRST, 53, 9, 0)
    later = one(eth(ipv4("1.2.3.4", "5.6.7.8", 17, b"b" * 408, offset=600)))
    assert (later["frag"], later["sport"], later["dport"], later["paylen"]) == (FRAG_LATER, 0, 0, 408)
    assert later["proto"] == 17
    assert later["payload"] == b"b" * 32


def test_ipv6_extension_headers_and_fragments() -> None:
    src, dst = "2001:db8::1", "fd00::2"
    chain = ext6(43, 0) + ext6(60, 1) + ext6(6, 0) + tcp(1234, 22, 0x02)  # hop-by-hop, routing, dst options
    r = one(eth(ipv6(src, dst, 0, chain, hlim=55), 0x86DD))
    assert (r["ipver"], r["proto"], r["dport"], r["flags"], r["ttl"], r["malformed"]) == (6, 6, 22, 2, 55, 0)
    assert addr_text(r["src"]) == "2001:db8::1" and addr_text(r["dst"]) == "fd00::2"
    r = one(eth(ipv6(src, dst, 44, frag6(17, 0, True) + udp(500, 4500, b"z" * 50)), 0x86DD))
    assert (r["frag"], r["proto"], r["sport"], r["dport"]) == (FRAG_FIRST, 17, 500, 4500)
    r = one(eth(ipv6(src, dst, 44, frag6(17, 1232, False) + b"y" * 64), 0x86DD))
    assert (r["frag"], r["proto"], r["sport"], r["paylen"]) == (FRAG_LATER, 17, 0, 64)
    r = one(eth(ipv6(src, dst, 58, icmp(128, 0, b"ping")), 0x86DD))
    assert (r["proto"], r["sport"], r["frag"]) == (58, 128, FRAG_NONE)
    ah = bytes([17, 4]) + bytes(22)  # AH: (4 + 2) * 4 = 24 bytes
    r = one(eth(ipv6(src, dst, 51, ah + udp(7, 8)), 0x86DD))
    assert (r["proto"], r["sport"], r["dport"]) == (17, 7, 8)


def test_bad_lengths_and_versions_are_malformed_but_snaplen_cuts_are_not() -> None:
    good = eth(ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 2, 2, b"p" * 200)))
    assert one(good[:30])["malformed"] == 1  # header cut short, frame as long as it claims
    cut = one(good, cap=60)  # snaplen: 60 of 274 bytes captured
    assert (cut["malformed"], cut["dport"], cut["paylen"]) == (0, 2, 200)
    assert one(eth(ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 2, 2), totlen=9000)))["malformed"] == 1
    assert one(eth(b"\x55" + bytes(40)))["malformed"] == 1  # IP version 5
    assert one(eth(ipv6("::1", "::2", 6, tcp(1, 2, 2), plen=4000), 0x86DD))["malformed"] == 1
    short_doff = b"\x00\x01\x00\x02" + bytes(8) + b"\x20\x02" + bytes(6)  # TCP data offset 2 (8 bytes)
    assert one(eth(ipv4("1.2.3.4", "5.6.7.8", 6, short_doff)))["malformed"] == 1
    assert one(b"\x01\x02")["malformed"] == 1
    loop = ext6(0, 0) * 12 + udp(1, 2)  # more extension headers than we follow
    assert one(eth(ipv6("::1", "::2", 0, loop), 0x86DD))["malformed"] == 1


def test_raw_ip_link_types() -> None:
    r = one(ipv4("1.2.3.4", "5.6.7.8", 17, udp(5, 6)), linktype=101)
    assert (r["ipver"], r["dport"]) == (4, 6)
    r = one(ipv6("::1", "::2", 17, udp(5, 6)), linktype=229)
    assert (r["ipver"], r["dport"]) == (6, 6)


def mutated_frames(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """n frames: real shapes with random bytes flipped, cut or lengthened, and pure noise."""
    seeds = [eth(ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 80, 2, PAY))),
             eth(ipv4("1.2.3.4", "5.6.7.8", 17, udp(53, 9, PAY), mf=True)),
             eth(ipv4("1.2.3.4", "5.6.7.8", 17, PAY, offset=8)),
             eth(ipv6("::1", "::2", 0, ext6(44, 0) + frag6(6, 0, True) + tcp(1, 2, 18, PAY)), 0x86DD),
             eth(ipv4("1.2.3.4", "5.6.7.8", 1, icmp(3, 1, PAY)), tags=((0x8100, 5),)),
             eth(ipv6("::1", "::2", 17, udp(1, 2, PAY)), 0x86DD, tags=((0x88A8, 1), (0x8100, 2)))]
    width = 128
    base = np.zeros((len(seeds), width), dtype=np.uint8)
    for i, s in enumerate(seeds):
        base[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    lens = np.array([len(s) for s in seeds])
    pick = rng.integers(0, len(seeds), n)
    m = base[pick]
    flips = rng.integers(0, 4, n)  # 0..3 random bytes overwritten in the first 80
    for k in range(3):
        rows = np.flatnonzero(flips > k)
        m[rows, rng.integers(0, 80, len(rows))] = rng.integers(0, 256, len(rows), dtype=np.uint8)
    noise = rng.random(n) < 0.1
    m[noise] = rng.integers(0, 256, (int(noise.sum()), width), dtype=np.uint8)
    caps = np.minimum(lens[pick] + rng.integers(-60, 10, n), width).clip(0)
    wires = caps + np.where(rng.random(n) < 0.2, rng.integers(0, 3000, n), 0)
    offs = np.arange(n, dtype=np.int64) * width
    return m.tobytes(), offs, caps.astype(np.int64), wires.astype(np.int64)


def test_a_million_random_and_mutated_frames_never_crash() -> None:
    rng = np.random.default_rng(20261128)
    total = malformed = 0
    for _ in range(10):
        buf, offs, caps, wires = mutated_frames(rng, 100_000)
        for lt in (1,):
            rows = parse_many(buf, offs, caps, wires, lt)
            total += len(rows)
            malformed += int(rows["malformed"].sum())
            assert np.all(rows["wirelen"] == wires)
    assert total == 1_000_000
    assert 100_000 < malformed < 900_000  # noise and broken lengths are counted, good mutants are not


@pytest.mark.parametrize("linktype", [1, 101, 113, 276])
def test_column_parser_equals_per_packet_parser_on_mutants(linktype: int) -> None:
    rng = np.random.default_rng(linktype)
    buf, offs, caps, wires = mutated_frames(rng, 20_000)
    rows = parse_many(buf, offs, caps, wires, linktype)
    ref = bytearray(len(offs) * RECORD_SIZE)
    from floodwatch.capture.fastparse import _scalar

    _scalar(buf, offs, caps, wires, linktype, np.arange(len(offs)), ref)
    expect = np.frombuffer(bytes(ref), dtype=RECORD_DTYPE)
    diff = np.flatnonzero(rows != expect)
    assert len(diff) == 0, (rows[diff[:3]], expect[diff[:3]])


def test_column_parser_equals_per_packet_parser_on_every_shared_capture(pcaps_dir: Path) -> None:
    """Whole files in the file source's chunks (issue 17's single-gather field reads): every record the
    column parser makes is the per-packet parser's, byte for byte."""
    from floodwatch.capture.fastparse import _scalar
    from floodwatch.capture.pcapfile import PcapReader

    checked = 0
    for path in sorted(pcaps_dir.glob("*.pcap*")):
        with PcapReader(path) as r:
            for c in r.chunks(2048):
                rows = parse_many(r.buf, c.offs, c.caps, c.wires, c.linktype)
                ref = bytearray(len(c) * RECORD_SIZE)
                _scalar(r.buf, c.offs, c.caps, c.wires, c.linktype, np.arange(len(c)), ref)
                assert rows.tobytes() == bytes(ref), path.name
                checked += len(c)
            del c, rows
    assert checked > 50_000
