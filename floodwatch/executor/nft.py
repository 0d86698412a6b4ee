"""nft: rules and set elements inside the agent's own table only.

Allowed:
  nft add|insert rule FAMILY TABLE CHAIN EXPR... VERDICT
  nft delete rule FAMILY TABLE CHAIN handle N
  nft add|delete element FAMILY TABLE SET ADDR[,ADDR...] [timeout DURATION]
EXPR: ip|ip6 saddr|daddr ADDR|@SET, tcp|udp sport|dport PORT[-PORT], tcp flags syn,
meta l4proto tcp|udp|icmp|icmpv6, iifname IFACE, limit rate [over] N/unit [burst N packets], counter,
meter NAME ip|ip6 saddr limit rate over N/unit [burst N packets] (a per-source limit).
VERDICT: drop | reject | accept | return. Braces are never typed (they are shell metacharacters):
the executor renders `{ ... }` itself. `tcp flags syn` is rendered `tcp flags & (syn | ack) == syn`
(openings only, never a SYN-ACK reply). Tables, chains, sets, flush and list are refused.
"""

from __future__ import annotations

from floodwatch.errors import CommandRejected
from floodwatch.executor import addr
from floodwatch.executor.match import ENTRIES, GLOBAL, PER_SOURCE, RULE, Match, pps
from floodwatch.executor.plan import ADDS, REMOVES, Plan
from floodwatch.settings.executor import ExecutorSettings

_VERDICTS = ("drop", "reject", "accept", "return")
_L4 = {"tcp", "udp", "icmp", "icmpv6"}


def _own_table(argv: list[str], s: ExecutorSettings) -> None:
    if len(argv) < 5:
        raise CommandRejected("nft: expected `nft VERB OBJECT FAMILY TABLE ...`")
    if argv[3] != s.nft_family or argv[4] != s.nft_table:
        raise CommandRejected(f"nft: only the agent's table `{s.nft_family} {s.nft_table}` may be changed")


class _Expr:
    """Parses the match/verdict words of an nft rule into a RuleSpec and canonical words."""

    def __init__(self, words: list[str], s: ExecutorSettings) -> None:
        self.words, self.i, self.s = words, 0, s
        self.rule = Match(RULE, "nft", family={"ip": 4, "ip6": 6}.get(s.nft_family, 0), table=s.nft_table)
        self.out: list[str] = []

    def take(self, what: str) -> str:
        if self.i >= len(self.words):
            raise CommandRejected(f"nft: {what} expected at the end of the rule")
        word = self.words[self.i]
        self.i += 1
        return word

    def parse(self) -> Match:
        while self.i < len(self.words):
            word = self.take("a match")
            handler = {"ip": self.addr_match, "ip6": self.addr_match, "tcp": self.l4_match, "udp": self.l4_match,
                       "meta": self.meta, "iifname": self.iifname, "limit": self.limit, "counter": self.counter,
                       "meter": self.meter}
            if word in _VERDICTS:
                if self.i != len(self.words):
                    raise CommandRejected("nft: the verdict must be the last word")
                self.rule.action = word
                self.out.append(word)
            elif word in handler:
                handler[word](word)
            else:
                raise CommandRejected(f"nft: {word!r} is not an allowed match or verdict")
        return self.rule

    def addr_match(self, word: str) -> None:
        field, value = self.take("saddr or daddr"), self.take("an address")
        if field not in ("saddr", "daddr"):
            raise CommandRejected(f"nft: {word} {field!r} is not allowed")
        if value.startswith("@"):
            name = addr.check_name(value[1:], "nft set")
            if field == "saddr":
                self.rule.src_set = name
            else:
                self.rule.dst_set = name
            self._family(4 if word == "ip" else 6)
            self.out += [word, field, "@" + name]
            return
        net = addr.parse_network(value, 4 if word == "ip" else 6)
        self._family(net.version)
        setattr(self.rule, "src" if field == "saddr" else "dst", net)
        self.out += [word, field, addr.net_text(net)]

    def l4_match(self, word: str) -> None:
        if self.rule.proto and self.rule.proto != word:
            raise CommandRejected("nft: one transport protocol per rule")
        self.rule.proto = word
        field = self.take("sport, dport or flags")
        if field == "flags":
            if self.take("a flag") != "syn" or word != "tcp":
                raise CommandRejected("nft: only `tcp flags syn` is allowed")
            self.rule.syn_only = True
            self.out += ["tcp", "flags", "&", "(syn", "|", "ack)", "==", "syn"]
            return
        if field not in ("sport", "dport"):
            raise CommandRejected(f"nft: {word} {field!r} is not allowed")
        rng = addr.parse_port_range(self.take("a port"), "-")
        setattr(self.rule, field, rng)
        self.out += [word, field, addr.port_text(rng, "-")]

    def meta(self, word: str) -> None:
        if self.take("l4proto") != "l4proto":
            raise CommandRejected("nft: only `meta l4proto` is allowed")
        proto = self.take("a protocol")
        if proto not in _L4:
            raise CommandRejected(f"nft: l4proto {proto!r} is not allowed")
        if self.rule.proto and self.rule.proto != proto.replace("icmpv6", "ipv6-icmp"):
            raise CommandRejected("nft: one transport protocol per rule")
        self.rule.proto = proto.replace("icmpv6", "ipv6-icmp")
        self.out += ["meta", "l4proto", proto]

    def iifname(self, word: str) -> None:
        self.out += ["iifname", addr.check_iface(self.take("an interface"))]

    def _family(self, version: int) -> None:
        if self.rule.family and self.rule.family != version:
            raise CommandRejected("nft: IPv4 and IPv6 matches in one rule")
        self.rule.family = version

    def _rate(self, must_be_over: bool) -> list[str]:
        if self.take("rate") != "rate":
            raise CommandRejected("nft: expected `limit rate`")
        value = self.take("a rate")
        words = ["limit", "rate"]
        if value == "over":
            words.append("over")
            value = self.take("a rate")
        elif must_be_over:
            raise CommandRejected("nft: a meter must be `limit rate over N/unit` (drop above the rate)")
        count, unit = addr.parse_rate(value)
        words.append(f"{count}/{unit}")
        if self.i < len(self.words) and self.words[self.i] == "burst":
            self.i += 1
            burst = addr.parse_int(self.take("a burst"), 1, 100000, "burst")
            if self.take("packets") != "packets":
                raise CommandRejected("nft: expected `burst N packets`")
            words += ["burst", str(burst), "packets"]
        if self.rule.limit:
            raise CommandRejected("nft: one limit per rule")
        self.rule.limit_pps, self.rule.limit_over = pps(count, unit), "over" in words
        return words

    def limit(self, word: str) -> None:
        self.out += self._rate(False)
        self.rule.limit = GLOBAL

    def meter(self, word: str) -> None:
        """meter NAME ip saddr limit rate over N/unit -> meter NAME { ip saddr limit rate over N/unit }."""
        name = addr.check_name(self.take("a meter name"), "nft meter")
        family, field = self.take("ip or ip6"), self.take("saddr")
        if family not in ("ip", "ip6") or field != "saddr" or self.take("limit") != "limit":
            raise CommandRejected("nft: expected `meter NAME ip|ip6 saddr limit rate over N/unit`")
        self._family(4 if family == "ip" else 6)
        words = self._rate(True)
        self.rule.limit = PER_SOURCE
        self.out += ["meter", name, "{", family, "saddr", *words, "}"]

    def counter(self, word: str) -> None:
        self.out.append("counter")


def _rule(argv: list[str], s: ExecutorSettings) -> Plan:
    verb, chain = argv[1], addr.check_name(argv[5] if len(argv) > 5 else "", "nft chain")
    head = ["nft", verb, "rule", s.nft_family, s.nft_table, chain]
    if verb == "delete":
        if len(argv) != 8 or argv[6] != "handle":
            raise CommandRejected("nft: delete rule needs exactly `handle N`")
        handle = addr.parse_int(argv[7], 1, 2**31, "handle")
        identity = f"nft {s.nft_family} {s.nft_table} {chain} handle {handle}"
        return Plan("nft", [*head, "handle", str(handle)], REMOVES, identity=identity, summary=f"delete {identity}")
    expr = _Expr(argv[6:], s)
    match = expr.parse()
    match.chain = chain
    if (match.sport or match.dport) and match.proto not in ("tcp", "udp"):
        raise CommandRejected("nft: ports need tcp or udp")
    text = " ".join(expr.out)
    return Plan("nft", ["nft", "--echo", "--handle", verb, "rule", s.nft_family, s.nft_table, chain, *expr.out],
                ADDS, identity="", summary=f"add nft rule in {chain}: {text}", nft_rule=(s.nft_table, chain),
                match=match)


def _braced(items: list[str], suffix: list[str]) -> list[str]:
    """['a', 'b'] -> ['{', 'a', *suffix, ',', 'b', *suffix, '}'] (nft joins argv with spaces)."""
    out = ["{"]
    for k, item in enumerate(items):
        out += ([","] if k else []) + [item, *suffix]
    return [*out, "}"]


def _element(argv: list[str], s: ExecutorSettings) -> Plan:
    verb = argv[1]
    name = addr.check_name(argv[5] if len(argv) > 5 else "", "nft set")
    rest = argv[6:]
    timeout = 0
    if len(rest) == 3 and rest[1] == "timeout" and verb == "add":
        timeout = addr.parse_duration(rest[2], s.max_ttl)
        rest = rest[:1]
    if len(rest) != 1:
        raise CommandRejected("nft: expected `element FAMILY TABLE SET ADDR[,ADDR...] [timeout N]`")
    nets = [addr.parse_network(t) for t in rest[0].split(",")]
    if len(nets) > 64:
        raise CommandRejected("nft: at most 64 elements per command")
    items = [addr.net_text(n) for n in nets]
    body = _braced(items, ["timeout", f"{timeout}s"] if timeout else [])
    head = [s.nft_family, s.nft_table, name]
    identity = f"nft element {s.nft_family} {s.nft_table} {name} {','.join(items)}"
    argv_out = ["nft", verb, "element", *head, *body]
    if verb == "delete":
        return Plan("nft", argv_out, REMOVES, identity=identity, summary=f"delete {identity}")
    undo = ["nft", "delete", "element", *head, *_braced(items, [])]
    return Plan("nft", argv_out, ADDS, undo=undo, identity=identity, summary=f"add {identity}",
                match=Match(ENTRIES, "nft", table=s.nft_table, set_name=name, entries=tuple(nets)))


def validate(argv: list[str], s: ExecutorSettings) -> Plan:
    if len(argv) < 3:
        raise CommandRejected("nft: expected `nft add|insert|delete rule|element ...`")
    verb, obj = argv[1], argv[2]
    _own_table(argv, s)
    if obj == "rule" and verb in ("add", "insert", "delete"):
        return _rule(argv, s)
    if obj == "element" and verb in ("add", "delete"):
        return _element(argv, s)
    raise CommandRejected(f"nft: `{verb} {obj}` is not allowed (only rules and set elements)")
