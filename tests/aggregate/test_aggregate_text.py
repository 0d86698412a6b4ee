"""Addresses back to text in the windows' top lists: exactly what the ipaddress module writes (the
fast paths of issue 17 must not change a single character, count or order)."""

from __future__ import annotations

import ipaddress
import random

import numpy as np

from floodwatch.aggregate.keys import addr_keys, key_text
from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.aggregate.window import hh_rows
from floodwatch.records import addr_bytes, addr_text


def reference(addr16: bytes) -> str:
    ip = ipaddress.IPv6Address(addr16)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def sample_addresses(n: int) -> list[bytes]:
    rnd = random.Random(17)
    edges = ["0.0.0.0", "255.255.255.255", "1.0.0.0", "10.0.0.1", "192.168.0.0", "::", "::1", "::1.2.3.4",
             "fe80::1", "2001:db8::", "2001:db8:0:0:1::1", "2001:0:0:1::", "ff02::1:ff00:1"]
    out = [addr_bytes(e) for e in edges]
    for _ in range(n):
        if rnd.random() < 0.7:
            out.append(addr_bytes(str(ipaddress.IPv4Address(rnd.getrandbits(32)))))
        else:  # zero groups here and there, so the :: compression is exercised
            groups = [rnd.choice([0, 0, rnd.getrandbits(16)]) for _ in range(8)]
            out.append(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)).packed)
    return list(dict.fromkeys(out))  # each address once


def test_addr_text_is_the_ipaddress_text_also_with_numpys_stripped_nuls() -> None:
    """Also the IPv6 texts (inet_ntop since issue 17), with zero groups anywhere and ::/96 addresses."""
    low = [bytes(12) + bytes([0, 0, rnd, 1]) for rnd in (0, 1, 2, 255)] + [bytes(12) + b"\x01\x02\x03\x04"]
    for a in sample_addresses(20_000) + low:
        assert addr_text(a) == reference(a)
        assert addr_text(a.rstrip(b"\x00")) == reference(a)  # numpy S16 values lose trailing NULs


def test_top_lists_keep_texts_counts_aux_and_order() -> None:
    addrs = sample_addresses(2000)
    rnd = random.Random(3)
    raw = np.frombuffer(b"".join(addrs), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    keys = addr_keys(raw[:, 0], raw[:, 1])
    counts = np.array([rnd.randint(1, 40) for _ in addrs], dtype=np.int64)
    aux = np.array([[rnd.randint(0, 10**9)] for _ in addrs], dtype=np.int64)
    hh = HeavyHitters(4096, 65536, payload_width=2, aux=1)
    hh.update(keys, counts, raw, aux)
    rows = hh_rows(hh, 10**6)
    assert len(rows) == len(addrs)
    by_text = {reference(a): (int(c), [int(x[0])]) for a, c, x in zip(addrs, counts, aux, strict=True)}
    assert {t: (c, x) for t, c, x in rows} == by_text
    # heaviest first, ties by key ascending
    order = sorted(zip(keys.tolist(), counts.tolist(), addrs, strict=True), key=lambda r: (-r[1], r[0]))
    assert [t for t, _, _ in rows] == [reference(a) for _, _, a in order]
    assert hh_rows(hh, 10) == rows[:10]


def test_key_text_of_ipv4_keys_and_unknown_ipv6_keys() -> None:
    assert key_text(0x0000FFFF_01020304) == "1.2.3.4"
    assert key_text(0xFFFFFFFF) == "255.255.255.255"
    assert key_text((1 << 63) | 0xABC) == "ipv6-hash-8000000000000abc"


def test_ipv4_texts_come_the_same_from_the_bounded_cache() -> None:
    from floodwatch.aggregate import keys

    rnd = random.Random(9)
    ints = [rnd.getrandbits(32) for _ in range(3 * keys.V4_TEXT_CACHE)]
    for _ in range(2):  # the second pass finds some in the cache, others cleared
        for i in ints:
            key = (0xFFFF << 32) | i
            assert key_text(key) == str(ipaddress.IPv4Address(i))
            assert len(keys._v4_text) <= keys.V4_TEXT_CACHE


def test_key_texts_of_many_keys_equal_key_text_of_each() -> None:
    """The vectorised texts (a window's heaviest sources, made for their countries) are key_text's, IPv4
    and IPv6 mixed, with and without the IPv6 address halves beside the keys."""
    from floodwatch.aggregate.keys import halves_bytes, key_texts

    rng = np.random.default_rng(21)
    v4 = (rng.integers(0, 1 << 32, 300, dtype=np.uint64) | np.uint64(0xFFFF << 32))
    v4[:4] = [0xFFFF00000000, 0xFFFFFFFFFFFF, 0xFFFF0A000001, 0x00000000FFFFFFFF]  # 0.0.0.0, 255..., 10.0.0.1
    halves = rng.integers(0, 1 << 63, (40, 2), dtype=np.uint64)
    v6 = rng.integers(0, 1 << 62, 40, dtype=np.uint64) | np.uint64(1 << 63)
    keys = np.concatenate((v4, v6))
    payload = np.concatenate((np.zeros((300, 2), np.uint64), halves))
    order = rng.permutation(keys.size)
    keys, payload = keys[order], payload[order]
    assert key_texts(v4) == [key_text(int(k)) for k in v4.tolist()]
    assert key_texts(v4)[:3] == ["0.0.0.0", "255.255.255.255", "10.0.0.1"]
    for n in (1, 4, 10, 47, 48, 49):  # a top list's few keys (made in Python) and a geo list's many (numpy)
        assert key_texts(v4[:n]) == [key_text(int(k)) for k in v4[:n].tolist()]
    want = [key_text(int(k), halves_bytes(*p) if k >> 63 else None) for k, p in zip(keys.tolist(), payload.tolist(),
                                                                                      strict=True)]
    assert key_texts(keys, payload) == want
    assert any(":" in t for t in want)  # the IPv6 ones are address texts, not hashes
    assert key_texts(keys) == [key_text(int(k)) for k in keys.tolist()]
    assert key_texts(keys[:0]) == []
