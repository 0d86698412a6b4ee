"""Payload signatures: built-ins on the right ports, IOC patterns (hex, text, objects), one automaton."""

from __future__ import annotations

import numpy as np
import pytest

from floodwatch.records import FRAG_LATER, RECORD_DTYPE
from floodwatch.signatures import SignatureMatcher, parse_ioc


def rec(proto: int, sport: int, dport: int, payload: bytes, frag: int = 0) -> np.ndarray:
    r = np.zeros(1, dtype=RECORD_DTYPE)
    r["proto"], r["sport"], r["dport"], r["frag"], r["ipver"] = proto, sport, dport, frag, 4
    r["paylen"], r["payload"] = len(payload), payload[:32]
    return r


def count(*records: np.ndarray, iocs: list[object] | None = None) -> dict[str, int]:
    m = SignatureMatcher.with_iocs(iocs) if iocs else SignatureMatcher.default()
    return m.count(np.concatenate(records))


@pytest.mark.parametrize(("name", "record"), [
    ("ntp_monlist", rec(17, 123, 40000, b"\xd7\x00\x03\x2a\x00\x06\x00\x48" + b"\x00" * 40)),
    ("memcached", rec(17, 11211, 40000, b"\x00\x01\x00\x00\x00\x01\x00\x00STAT pid 2114\r\n")),
    ("ssdp", rec(17, 1900, 40000, b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\n")),
    ("cldap", rec(17, 389, 40000, b"\x30\x84\x00\x00\x0b\xde\x02\x01\x01\x64")),
    ("dns_response", rec(17, 53, 40000, b"\x12\x34\x81\x80\x00\x01\x00\x08")),
    ("dns_query", rec(17, 40000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00")),
    ("chargen", rec(17, 19, 40000, b"efghijklmnopqrstuvwxyz{|}~!\"#$%&'()")),
    ("snmp_response", rec(17, 161, 40000, b"\x30\x82\x05\xdc\x02\x01\x01\x04\x06public\xa2")),
    ("http_request", rec(6, 40000, 80, b"GET /index.html HTTP/1.1\r\nHost: x\r\n")),
    ("botnet:loic", rec(17, 40000, 80, b"A cat is fine too. Desudesudesu~")),
])
def test_detect_builtin_signature(name: str, record: np.ndarray) -> None:
    assert count(record).get(name) == 1


def test_detect_signatures_need_their_ports() -> None:
    got = count(rec(17, 40000, 5000, b"\xd7\x00\x03\x2a" + b"\x00" * 8),  # mode 7 but not from port 123
                rec(6, 40000, 22, b"GET / HTTP/1.1\r\n"),  # a request line, but not to a web port
                rec(6, 40000, 80, b"xxGET / HTTP/1.1\r\n"))  # not at the start of the payload
    assert got == {}


def test_detect_ioc_patterns_hex_text_and_objects() -> None:
    iocs: list[object] = ["de ad be ef", {"pattern": "hex:c0ffee", "name": "coffee", "attack_family": "udp_flood"},
            {"pattern": "evilbot/1.0", "name": "evilbot"}, "cafebabe"]
    got = count(rec(17, 1, 2, b"xx\xde\xad\xbe\xefyy"), rec(17, 1, 2, b"\xc0\xff\xee"),
                rec(6, 3, 4, b"UA: evilbot/1.0"), rec(17, 1, 2, b"\xca\xfe\xba\xbe"),
                rec(17, 1, 2, b"text cafebabe"), rec(17, 1, 2, b"nothing here"), iocs=iocs)
    assert got == {"ioc:de ad be ef": 1, "ioc:coffee": 1, "ioc:evilbot": 1, "ioc:cafebabe": 2}


def test_detect_ioc_match_counts_a_record_once_and_only_inside_its_payload() -> None:
    # the pattern straddles two heads and repeats in one: 1 record, not 2 or 3
    r1 = rec(17, 1, 2, b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzMA")
    r2 = rec(17, 1, 2, b"RKER MARKER MARKER")
    r3 = rec(17, 1, 2, b"MARK")  # paylen 4: the zero padding after it must not complete a match
    assert count(r1, r2, r3, iocs=["MARKER"]) == {"ioc:MARKER": 1}


def test_detect_bad_ioc_patterns_are_refused_with_reasons() -> None:
    m = SignatureMatcher.with_iocs(["", {"pattern": "hex:zz"}, {"name": "no pattern"}, 42, "ok"])
    assert len(m.rejected_iocs) == 4
    assert "ioc:ok" in m.names
    with pytest.raises(ValueError, match="not hex"):
        parse_ioc("0xZZ")


def test_detect_later_fragments_and_empty_payloads_are_skipped() -> None:
    got = count(rec(17, 123, 4, b"\xd7\x00\x03\x2a" + b"\x00" * 8, frag=FRAG_LATER), rec(17, 53, 4, b""))
    assert got == {}


def test_detect_many_patterns_one_pass() -> None:
    """10,000 IOC patterns over 5,000 records: one automaton, counted right."""
    iocs = [f"pattern-{i:05d}" for i in range(10_000)]
    recs = np.concatenate([rec(17, 1, 2, f"..pattern-{i % 10_000:05d}".encode()) for i in range(0, 50_000, 10)])
    got = SignatureMatcher.with_iocs(iocs).count(recs)
    assert sum(v for k, v in got.items() if k.startswith("ioc:")) == len(recs)


def test_detect_large_batches_count_as_their_parts() -> None:
    """A flood-sized batch (the matcher indexes which ports occur) counts what its small pieces count."""
    kinds = [
        rec(17, 123, 40000, b"\xd7\x00\x03\x2a\x00\x06\x00\x48" + b"\x00" * 40),
        rec(17, 53, 40000, b"\x12\x34\x81\x80\x00\x01\x00\x08"),
        rec(17, 40000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00"),
        rec(17, 40000, 9999, b"\x12\x34\x81\x80\x00\x01\x00\x08"),  # a DNS-looking payload off port 53
        rec(6, 40000, 80, b"GET /index.html HTTP/1.1\r\nHost: x\r\n"),
    ]
    rng = np.random.default_rng(3)
    batch = np.concatenate([kinds[i] for i in rng.integers(0, len(kinds), 3000)])
    m = SignatureMatcher.default()
    whole = m.count(batch)
    parts: dict[str, int] = {}
    for i in range(0, len(batch), 100):
        for name, n in m.count(batch[i:i + 100]).items():
            parts[name] = parts.get(name, 0) + n
    assert whole == parts
    assert whole["dns_response"] == int(np.count_nonzero(batch["sport"] == 53))
    assert whole["ntp_monlist"] == int(np.count_nonzero(batch["sport"] == 123))


def test_signature_port_sets_match_as_np_isin_does() -> None:
    """The port test of a signature (a comparison per port for a few, since issue 17) is np.isin's."""
    import numpy as np

    from floodwatch.signatures import _in

    rng = np.random.default_rng(5)
    for size in (1, 2, 5, 16, 17, 40):
        col = rng.integers(0, 65536, 500).astype(np.uint16)
        values = frozenset(rng.choice(col, size // 2 + 1).tolist() + rng.integers(0, 70000, size // 2).tolist())
        assert _in(col, values).tolist() == np.isin(col, list(values)).tolist()
        assert _in(col, values).any()
    assert not _in(np.array([1, 2], np.uint16), frozenset({70000, 3})).any()
