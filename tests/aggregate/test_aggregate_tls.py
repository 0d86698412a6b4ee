"""TLS ClientHellos counted from packet heads (floodwatch/aggregate/tls.py) over whole batches."""

from __future__ import annotations

import numpy as np

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.tls import client_hellos
from floodwatch.records import DIR_OUT
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, records
from tests.aggregate.test_aggregate_detail import windows

# a real TLS 1.2/1.3 ClientHello head: record type 22, version 3.1, length, handshake type 1
HELLO = bytes.fromhex("16030102000100 01fc0303".replace(" ", "")).ljust(32, b"\x07")


def heads(*payloads: bytes) -> np.ndarray:
    return np.array([p.ljust(32, b"\x00")[:32] for p in payloads])


def test_aggregate_tls_client_hello_mask_reads_the_record_and_handshake_type() -> None:
    not_hello = [
        bytes.fromhex("160303004a020000"),  # ServerHello (type 2)
        bytes.fromhex("1703030040aabbcc"),  # application data
        bytes.fromhex("1605010200010000"),  # not TLS 3.x
        b"GET / HTTP/1.1\r\n",
    ]
    recs = records(6, dport=443, paylen=517, payload=heads(HELLO, *not_hello, HELLO))
    assert client_hellos(recs, np.array([443], dtype=np.uint16)).tolist() == [True, False, False, False, False, True]
    short = records(1, dport=443, paylen=5, payload=heads(HELLO))  # the payload ends before the type
    assert not client_hellos(short, np.array([443], dtype=np.uint16)).any()
    udp = records(1, dport=443, proto=17, paylen=517, payload=heads(HELLO))
    assert not client_hellos(udp, np.array([443], dtype=np.uint16)).any()


def test_aggregate_tls_hellos_per_window_and_source_are_exact_and_scaled() -> None:
    e = Engine(AggregatorSettings(tls_ports=[443, 8443]))
    flood = records(300, ts=1000.01, src="198.18.0.7", dport=443, flags=24, paylen=517, payload=heads(HELLO))
    alt = records(40, ts=1000.02, src="198.18.0.8", dport=8443, flags=24, paylen=517, payload=heads(HELLO))
    other_port = records(50, ts=1000.03, src="198.18.0.9", dport=4433, flags=24, paylen=517,
                         payload=heads(HELLO))
    data = records(500, ts=1000.04, src="198.18.0.9", dport=443, flags=24, paylen=1200,
                   payload=heads(bytes.fromhex("1703030400")))
    answered = records(20, ts=1000.05, src="10.10.10.10", dst="198.18.0.7", sport=40000, dport=443,
                       direction=DIR_OUT, flags=24, paylen=517, payload=heads(HELLO))  # ours, outbound
    later = records(10, ts=1000.15, src="198.18.0.6", dport=443, flags=24, paylen=517, payload=heads(HELLO))
    first, second = [w for w in windows(e, batch(flood), batch(alt, rate=2), batch(other_port), batch(data),
                                        batch(answered), batch(later)) if w.sampled][:2]
    assert first.tls_hellos == 300 + 2 * 40
    assert first.top_tls_src == [["198.18.0.7", 300], ["198.18.0.8", 80]]
    assert second.tls_hellos == 10 and second.top_tls_src == [["198.18.0.6", 10]]


def test_aggregate_tls_windows_without_hellos_carry_nothing() -> None:
    e = Engine(AggregatorSettings())
    w = windows(e, batch(records(100, ts=1000.0, dport=443)))[0]
    assert w.tls_hellos == 0 and w.top_tls_src == []
