"""Random commands within the executor's grammars, aimed at a test host (seeded: replayable).

Sources are drawn from the host's protected peers and ranges around them (which must be refused), from
attacker space outside 198.18.0.0/15 (which may be blocked), and from loopback, link-local, multicast
and IPv4-mapped forms. The clients the test connects from are never named by an attacker source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    own4: str  # 198.18.N.1
    own6: str
    net4: str  # 198.18.N.0/24
    net6: str
    gateway: str
    resolver: str
    api: str
    api_port: int
    ssh_peer: str
    iface: str
    services: tuple[int, ...]  # tcp ports listening on the host (22 among them)


class Gen:
    def __init__(self, seed: int, host: Host) -> None:
        self.r = random.Random(seed)
        self.h = host

    def pick(self, *options: str) -> str:
        return self.r.choice(options)

    def attacker4(self) -> str:
        r = self.r
        net = r.choice(["203.0.113", "198.51.100", f"{r.randint(20, 99)}.{r.randint(0, 255)}.{r.randint(0, 255)}"])
        return self.pick(f"{net}.{r.randint(1, 254)}", f"{net}.0/24", f"{net.rsplit('.', 1)[0]}.0.0/16")

    def src4(self) -> str:
        h, r = self.h, self.r
        b = h.net4.rsplit(".", 2)[0]  # 198.18
        attackers = [self.attacker4() for _ in range(4)]
        return self.pick(*attackers, h.own4, h.gateway, h.resolver, h.api, h.ssh_peer,
                         h.net4, f"{b}.0.0/16", "127.0.0.1", "127.0.0.0/8", "169.254.1.1", "224.0.0.1",
                         "0.0.0.0/0", "10.0.0.0/8", f"{h.ssh_peer.rsplit('.', 1)[0]}.0/28",
                         f"{h.resolver.rsplit('.', 1)[0]}.{r.choice([48, 52, 53])}")

    def src6(self) -> str:
        h, r = self.h, self.r
        return self.pick(f"2001:db8:{r.randint(1, 9999):x}::/48", f"2001:db8::{r.randint(1, 9999):x}",
                         f"2001:db8:{r.randint(1, 9999):x}::{r.randint(1, 9999):x}", h.own6,
                         h.net6, "fe80::/64", "fe80::1", "ff02::1", "::1", "::ffff:127.0.0.1",
                         f"::ffff:{h.own4}", f"::ffff:{h.ssh_peer}", f"::ffff:{h.gateway}", "::/0")

    def sport(self) -> str:
        r = self.r
        return self.pick("", "", "123", "19", "11211", "53", "1900", str(r.randint(1, 65535)), "0:65535",
                         "1024:65535", f"{r.randint(1, 30000)}:{r.randint(30001, 65535)}", str(self.h.api_port))

    def dport(self) -> str:
        r = self.r
        svc = r.choice(self.h.services)
        return self.pick("", "", str(svc), "22", "23:65535", "1:65535", f"{svc - 5}:{svc + 5}", "3000:3100",
                         str(r.randint(1, 65535)), "9000:9100", "40000:60000")

    def rate(self) -> str:
        return f"{self.r.choice([1, 5, 20, 100, 1000])}/{self.pick('second', 'minute')}"

    def iptables(self) -> str:
        r = self.r
        v6 = r.random() < 0.35
        words = ["ip6tables" if v6 else "iptables", self.pick("-I", "-A"), self.pick("INPUT", "FLOODWATCH")]
        proto = self.pick("", "tcp", "tcp", "udp", "ipv6-icmp" if v6 else "icmp")
        if proto:
            words += ["-p", proto]
        if r.random() < 0.55:
            words += ["-s", self.src6() if v6 else self.src4()]
        elif r.random() < 0.15:
            words += ["-m", "set", "--match-set", "floodwatch_block6" if v6 else "floodwatch_block", "src"]
        if proto in ("tcp", "udp"):
            for opt, value in (("--sport", self.sport()), ("--dport", self.dport())):
                if value:
                    words += [opt, value]
            if proto == "tcp" and r.random() < 0.4:
                words.append("--syn")
        limit = r.random()
        if limit < 0.15:
            words += ["-m", "limit", "--limit", self.rate()]
        elif limit < 0.4:
            words += ["-m", "hashlimit", "--hashlimit-above", self.rate(), "--hashlimit-burst",
                      str(r.choice([1, 5, 50])), "--hashlimit-mode", self.pick("srcip", "srcip,dstport", "dstip")]
        return " ".join([*words, "-j", self.pick("DROP", "DROP", "DROP", "REJECT", "ACCEPT", "RETURN")])

    def nft(self) -> str:
        r = self.r
        words = ["nft", self.pick("add", "insert"), "rule", "inet", "floodwatch", "input"]
        v6 = r.random() < 0.3
        if r.random() < 0.5:
            words += ["ip6" if v6 else "ip", "saddr", self.src6() if v6 else self.src4()]
        elif r.random() < 0.2:
            words += ["ip6" if v6 else "ip", "saddr", "@blk6" if v6 else "@blk"]
        proto = self.pick("", "tcp", "udp")
        if proto:
            sport, dport = self.sport().replace(":", "-"), self.dport().replace(":", "-")
            words += [proto, "sport", sport] if sport else []
            words += [proto, "dport", dport] if dport else []
            if proto == "tcp" and r.random() < 0.4:
                words += ["tcp", "flags", "syn"]
        elif r.random() < 0.3:
            words += ["meta", "l4proto", self.pick("icmp", "icmpv6", "tcp", "udp")]
        limit = r.random()
        if limit < 0.2:
            words += ["limit", "rate", "over", self.rate()]
        elif limit < 0.45:
            words += ["meter", f"m{r.randint(1, 99)}", "ip6" if v6 else "ip", "saddr", "limit", "rate", "over",
                      self.rate()]
        return " ".join([*words, self.pick("drop", "drop", "drop", "reject", "accept", "return")])

    def entries(self) -> str:
        r = self.r
        if r.random() < 0.5:
            v6 = r.random() < 0.3
            name = ("floodwatch_block6" if v6 else "floodwatch_block") if r.random() < 0.9 else "floodwatch_block"
            return f"ipset add {name} {self.src6() if v6 else self.src4()} timeout {r.randint(60, 600)} -exist"
        items = ",".join(self.src4() for _ in range(r.randint(1, 3)))
        return f"nft add element inet floodwatch blk {items}"

    def other(self) -> str:
        r = self.r
        rate = self.pick("1bit", "100kbit", "999kbit", "1mbit", "10mbit", "1gbit")
        burst = self.pick("1k", "2k", "10k", "32kb")
        key, value = r.choice([("net.ipv4.tcp_syncookies", r.randint(0, 2)), ("net.ipv4.icmp_ratelimit",
                               r.choice([0, 10, 1000, 5000])), ("net.ipv4.tcp_synack_retries", r.randint(1, 10)),
                               ("net.ipv4.tcp_max_syn_backlog", r.choice([128, 512, 4096, 65536])),
                               ("net.ipv4.icmp_echo_ignore_all", r.randint(0, 1))])
        return self.pick(f"tc qdisc add dev {self.h.iface} root handle fa00: tbf rate {rate} burst {burst} "
                         "latency 50ms", f"sysctl -w {key}={value}", f"sysctl -w {key}={value}",
                         f"ipset create {self.pick('floodwatch_block', 'floodwatch_x', 'floodwatch_block6')} "
                         "hash:net -exist")

    def command(self) -> str:
        x = self.r.random()
        if x < 0.45:
            return self.iptables()
        if x < 0.7:
            return self.nft()
        if x < 0.88:
            return self.entries()
        return self.other()


def issue_examples(h: Host) -> list[str]:
    """The command classes of issue 12, aimed at this host."""
    return [
        "iptables -I INPUT -p tcp --sport 0:65535 -j DROP", "iptables -I INPUT -p tcp --sport 1024:65535 -j DROP",
        "iptables -I INPUT -p tcp --sport 1024:65535 -j REJECT",
        "iptables -I INPUT -p tcp --syn --sport 0:65535 -j DROP",
        "iptables -I INPUT -p udp --sport 0:65535 -j DROP", "ip6tables -I INPUT -p tcp --sport 0:65535 -j DROP",
        "nft add rule inet floodwatch input tcp sport 0-65535 drop",
        "iptables -I INPUT -p tcp --dport 23:65535 -j DROP",
        "iptables -I INPUT -s 203.0.113.7 -j ACCEPT", "iptables -I INPUT -s 203.0.0.0/16 -j ACCEPT",
        "ip6tables -I INPUT -s fe80::/64 -j DROP", "ip6tables -I INPUT -s ::ffff:127.0.0.1 -j DROP",
        f"tc qdisc add dev {h.iface} root handle fa00: tbf rate 1bit burst 10k latency 50ms",
        "sysctl -w net.ipv4.tcp_syncookies=0", "sysctl -w net.ipv4.icmp_ratelimit=0",
        "iptables -I FLOODWATCH 1 -j RETURN", "nft insert rule inet floodwatch input return",
        "ipset create floodwatch_block hash:net", "ipset add floodwatch_block 1.2.0.0/16",
        f"iptables -I INPUT -s {h.ssh_peer} -j DROP", f"iptables -I INPUT -s {h.gateway} -j DROP",
        f"iptables -I INPUT -s {h.resolver} -j DROP", f"iptables -I INPUT -s {h.api} -j DROP",
        f"iptables -I INPUT -s {h.net4} -j DROP", "iptables -I INPUT -p udp --sport 53 -j DROP",
        f"iptables -I INPUT -p tcp --sport {h.api_port} -j DROP", "iptables -I INPUT -p tcp --dport 22 -j DROP",
    ]


def plain_mitigations() -> list[str]:
    """What operators do every day; each must be accepted."""
    return [
        "iptables -I INPUT -s 198.51.100.7 -j DROP", "iptables -I INPUT -p udp --sport 123 -j DROP",
        "iptables -I INPUT -p tcp --syn -m hashlimit --hashlimit-above 20/second --hashlimit-burst 40 "
        "--hashlimit-mode srcip -j DROP",
        "nft add rule inet floodwatch input tcp flags syn meter synflood ip saddr limit rate over 20/second drop",
        "nft add rule inet floodwatch input ip saddr 198.51.100.0/24 drop", "sysctl -w net.ipv4.tcp_syncookies=1",
    ]

