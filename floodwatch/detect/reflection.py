"""Vectors named by a port (UDP reflection by source port, DNS queries by destination port): only when
the port stands far above what random ports would give, and with the evidence that names them.

A flood from random source ports puts about one packet in 65,536 on any given port: at 300 kpps that is
a few packets a second on 19 (chargen), 111 (portmap) or 123 (NTP). A port names a vector only when

* its packets are more than chance allows: for the port's protocol's packets with ports (n records), the
  count on one port of uniformly random 16-bit ports is Poisson with mean n/65,536; the port's record
  count must have a tail probability under `CHANCE_ALPHA` (1e-9, about six standard deviations); and
* it carries at least `MIN_VECTOR_SHARE` (1 %) of the attack's packets.

Counts are in scaled packets; the test runs on records (scaled packets / packets per record), since
sampling 1 in N makes the scaled counts N times as noisy. A vector is `confirmed` (evidence "payload")
when the payload signature of its protocol matched at least `CONFIRM_SHARE` of its packets, else its
evidence is "port" (the port alone names it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# UDP reflection/amplification: reflector source port -> protocol name (subtype `<name>_amplification`)
REFLECTION_PORTS: dict[int, str] = {
    53: "dns", 123: "ntp", 1900: "ssdp", 11211: "memcached", 389: "cldap", 19: "chargen", 161: "snmp",
    137: "netbios", 17: "qotd", 5353: "mdns", 3702: "ws_discovery", 111: "portmap", 520: "rip",
    69: "tftp", 3283: "arms", 1194: "openvpn", 5683: "coap", 427: "slp", 5060: "sip", 500: "isakmp",
    4500: "isakmp", 10001: "ubiquiti", 47808: "bacnet", 37810: "dvr", 1434: "mssql", 27015: "steam",
}
# payload signatures (floodwatch.signatures) that confirm a reflection protocol
CONFIRMING_SIGNATURES: dict[str, tuple[str, ...]] = {
    "dns": ("dns_response",), "ntp": ("ntp_monlist",), "ssdp": ("ssdp",), "memcached": ("memcached",),
    "cldap": ("cldap",), "chargen": ("chargen",), "snmp": ("snmp_response",),
    "netbios": ("netbios_response",), "mdns": ("mdns_response",), "ws_discovery": ("ws_discovery",),
    "portmap": ("portmap_response",), "coap": ("coap",), "ubiquiti": ("ubiquiti",), "bacnet": ("bacnet",),
    "mssql": ("mssql_ssrp",), "slp": ("slp",), "rip": ("rip",), "openvpn": ("openvpn",), "sip": ("sip",),
    "steam": ("steam",), "dns_query": ("dns_query",),
}
PORT_CHANCE = 1 / 65536  # share of uniformly random 16-bit ports that land on one port
CHANCE_ALPHA = 1e-9  # a port's count must be this unlikely under random ports (~6 standard deviations)
MIN_VECTOR_SHARE = 0.01  # and carry at least this share of the attack's packets
CONFIRM_SHARE = 0.5  # payload signatures on at least this share of a vector's packets confirm it
_NORMAL_Z = 6.0  # for large means the Poisson tail is taken as normal: this many standard deviations


def poisson_tail_below(k: int, lam: float, alpha: float = CHANCE_ALPHA) -> bool:
    """P(X >= k) < alpha for X ~ Poisson(lam) (k records on one port where lam are expected)."""
    if k <= lam:
        return False
    if lam > 50:
        return (k - lam) / math.sqrt(lam) > _NORMAL_Z
    if k > lam + 12 * math.sqrt(lam) + 30:
        return True  # far beyond anything the loop below would sum to under alpha
    term, cdf = math.exp(-lam), 0.0
    for j in range(k):
        cdf += term
        term *= lam / (j + 1)
    return 1.0 - cdf < alpha


def above_chance(count: float, pool: float, per_record: float, attack: float) -> bool:
    """Whether `count` packets on one port (of `pool` packets of its protocol with ports, `per_record`
    packets per sampled record) name a vector of an attack of `attack` packets (see the module doc)."""
    if count <= 0 or attack <= 0 or count < MIN_VECTOR_SHARE * attack:
        return False
    scale = max(per_record, 1.0)
    return poisson_tail_below(round(count / scale), pool / scale * PORT_CHANCE)


def confirmed_by(name: str, packets: float, signatures: Mapping[str, int]) -> bool:
    """A payload signature of protocol `name` matched at least CONFIRM_SHARE of the vector's packets."""
    if packets <= 0:
        return False
    hits = max((int(signatures.get(s, 0)) for s in CONFIRMING_SIGNATURES.get(name, ())), default=0)
    return hits >= CONFIRM_SHARE * packets
