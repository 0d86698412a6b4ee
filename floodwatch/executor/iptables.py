"""iptables / ip6tables: insert, append or delete one rule in an allowed chain of an allowed table.

Allowed: -t TABLE, -I CHAIN [N], -A CHAIN, -D CHAIN (rule spec only, and only a rule the agent added),
-p tcp|udp|icmp|icmpv6, -s/-d ADDR[/PREFIX], --sport/--dport PORT[:PORT], --syn, -i IFACE,
-m tcp|udp|limit|set|hashlimit, --limit N/unit, --limit-burst N, --match-set OWN_SET src|dst,
-m hashlimit --hashlimit-above N/unit [--hashlimit-burst N] --hashlimit-mode srcip[,dstport]
[--hashlimit-name NAME] (a per-source limit), -j DROP|REJECT|ACCEPT|RETURN, --reject-with TYPE.
Everything else (flush, policy, chains, numbers
for -D, negation, other modules or targets) is rejected.
"""

from __future__ import annotations

import hashlib

from floodwatch.errors import CommandRejected
from floodwatch.executor import addr
from floodwatch.executor.match import GLOBAL, PER_SOURCE, RULE, Match, pps
from floodwatch.executor.plan import ADDS, REMOVES, Plan
from floodwatch.settings.executor import ExecutorSettings

_COMMANDS = {"-I": "-I", "--insert": "-I", "-A": "-A", "--append": "-A", "-D": "-D", "--delete": "-D"}
_ALIASES = {"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--protocol": "-p",
            "--jump": "-j", "--in-interface": "-i", "--match": "-m", "--table": "-t",
            "--source-port": "--sport", "--destination-port": "--dport"}
_PROTOS = {4: {"tcp": "tcp", "udp": "udp", "icmp": "icmp"},
           6: {"tcp": "tcp", "udp": "udp", "icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp"}}
_MODULES = {"tcp", "udp", "limit", "set", "hashlimit"}
_HASHLIMIT = ("--hashlimit-above", "--hashlimit-burst", "--hashlimit-mode", "--hashlimit-name")
_HASHLIMIT_MODES = ("srcip", "srcip,dstport")
_TARGETS = {"DROP": "drop", "REJECT": "reject", "ACCEPT": "accept", "RETURN": "return"}
_REJECT_WITH = {4: {"tcp-reset", "icmp-port-unreachable", "icmp-host-unreachable", "icmp-admin-prohibited"},
                6: {"tcp-reset", "icmp6-port-unreachable", "icmp6-adm-prohibited"}}


class _Parsed:
    def __init__(self, family: int) -> None:
        self.table = "filter"
        self.command = ""
        self.chain = ""
        self.position = 0
        self.opts: dict[str, str] = {}
        self.modules: list[str] = []
        self.rule = Match(RULE, "ip6tables" if family == 6 else "iptables", family=family)


def _value(argv: list[str], i: int, opt: str) -> str:
    if i >= len(argv):
        raise CommandRejected(f"{opt} needs a value")
    value = argv[i]
    if value.startswith("-"):
        raise CommandRejected(f"{opt}: value {value!r} looks like an option")
    return value


def _set_once(p: _Parsed, opt: str, value: str) -> None:
    if opt in p.opts:
        raise CommandRejected(f"{opt} given twice")
    p.opts[opt] = value


def _parse(argv: list[str], family: int) -> _Parsed:
    p = _Parsed(family)
    i = 1
    while i < len(argv):
        opt = _ALIASES.get(argv[i], argv[i])
        if opt in _COMMANDS:
            if p.command:
                raise CommandRejected("only one of -I, -A, -D per command")
            p.command = _COMMANDS[opt]
            p.chain = _value(argv, i + 1, opt)
            i += 2
            if p.command == "-I" and i < len(argv) and argv[i].isdigit():
                p.position = addr.parse_int(argv[i], 1, 10000, "rule position")
                i += 1
            continue
        if opt == "--syn":
            _set_once(p, opt, "")
            i += 1
            continue
        if opt == "-m":
            module = _value(argv, i + 1, opt)
            if module not in _MODULES:
                raise CommandRejected(f"match module {module!r} is not allowed")
            p.modules.append(module)
        elif opt in ("-t", "-s", "-d", "-p", "-i", "-j", "--sport", "--dport", "--limit", "--limit-burst",
                     "--reject-with", *_HASHLIMIT):
            _set_once(p, opt, _value(argv, i + 1, opt))
        elif opt == "--match-set":
            _set_once(p, opt, _value(argv, i + 1, opt))
            _set_once(p, "set-dir", _value(argv, i + 2, opt))
            i += 1
        else:
            raise CommandRejected(f"option {argv[i]!r} is not allowed")
        i += 2
    return p


def _check_table_chain(p: _Parsed, s: ExecutorSettings) -> None:
    p.table = p.opts.get("-t", "filter")
    if p.table not in s.iptables_tables:
        raise CommandRejected(f"table {p.table!r} is not allowed (allowed: {', '.join(s.iptables_tables)})")
    if not p.command:
        raise CommandRejected("a command must insert (-I), append (-A) or delete (-D) a rule")
    addr.check_name(p.chain, "chain")
    if p.chain not in s.iptables_chains:
        raise CommandRejected(f"chain {p.chain!r} is not allowed (allowed: {', '.join(s.iptables_chains)})")


def _spec(p: _Parsed, s: ExecutorSettings) -> list[str]:
    """Check the options and render the rule spec in a fixed order."""
    o, r, fam = p.opts, p.rule, p.rule.family
    out: list[str] = []
    if "-p" in o:
        if o["-p"] not in _PROTOS[fam]:
            raise CommandRejected(f"protocol {o['-p']!r} is not allowed for IPv{fam}")
        r.proto = _PROTOS[fam][o["-p"]]
        out += ["-p", r.proto]
    for opt in ("-s", "-d"):
        if opt in o:
            net = addr.parse_network(o[opt], fam)
            setattr(r, "src" if opt == "-s" else "dst", net)
            out += [opt, addr.net_text(net)]
    if "-i" in o:
        out += ["-i", addr.check_iface(o["-i"])]
    if "--match-set" in o:
        r.src_set = addr.check_name(o["--match-set"], "ipset", s.ipset_prefix)
        if o["set-dir"] not in ("src", "dst"):
            raise CommandRejected("--match-set direction must be src or dst")
        out += ["-m", "set", "--match-set", r.src_set, o["set-dir"]]
        if o["set-dir"] != "src":
            r.src_set, r.dst_set = "", r.src_set
    out += _ports(p)
    out += _limit(p)
    out += _hashlimit(p, out)
    return out


def _ports(p: _Parsed) -> list[str]:
    o, r, out = p.opts, p.rule, []
    if "--syn" in o:
        if r.proto != "tcp":
            raise CommandRejected("--syn needs -p tcp")
        out.append("--syn")
    for opt in ("--sport", "--dport"):
        if opt in o:
            rng = addr.parse_port_range(o[opt])
            setattr(r, opt[2:], rng)
            out += [opt, addr.port_text(rng)]
    if (r.sport or r.dport) and r.proto not in ("tcp", "udp"):
        raise CommandRejected("ports need -p tcp or -p udp")
    return out


def _limit(p: _Parsed) -> list[str]:
    o, out = p.opts, []
    if "--limit" in o:
        count, unit = addr.parse_rate(o["--limit"])
        out += ["-m", "limit", "--limit", f"{count}/{unit}"]
        if "--limit-burst" in o:
            out += ["--limit-burst", str(addr.parse_int(o["--limit-burst"], 1, 100000, "--limit-burst"))]
        # -m limit matches the first N/unit: with DROP it drops those and lets the rest through
        p.rule.limit, p.rule.limit_pps, p.rule.limit_over = GLOBAL, pps(count, unit), False
    elif "--limit-burst" in o:
        raise CommandRejected("--limit-burst needs --limit")
    return out


def _hashlimit(p: _Parsed, spec: list[str]) -> list[str]:
    """-m hashlimit: only `--hashlimit-above` (drop what one source sends above the rate), per source."""
    o = p.opts
    if not any(k in o for k in _HASHLIMIT):
        return []
    if "--hashlimit-above" not in o:
        raise CommandRejected("-m hashlimit needs --hashlimit-above N/unit (--hashlimit-upto is not allowed)")
    if o.get("--hashlimit-mode") not in _HASHLIMIT_MODES:
        raise CommandRejected(f"--hashlimit-mode must be one of {', '.join(_HASHLIMIT_MODES)} (a per-source limit)")
    if "--limit" in o:
        raise CommandRejected("one of -m limit and -m hashlimit per rule")
    count, unit = addr.parse_rate(o["--hashlimit-above"])
    out = ["-m", "hashlimit", "--hashlimit-above", f"{count}/{unit}"]
    if "--hashlimit-burst" in o:
        out += ["--hashlimit-burst", str(addr.parse_int(o["--hashlimit-burst"], 1, 100000, "--hashlimit-burst"))]
    out += ["--hashlimit-mode", o["--hashlimit-mode"]]
    name = o.get("--hashlimit-name") or "fw" + hashlib.sha256(" ".join(spec + out).encode()).hexdigest()[:12]
    if len(addr.check_name(name, "--hashlimit-name")) > 15:
        raise CommandRejected("--hashlimit-name: at most 15 characters")
    p.rule.limit, p.rule.limit_pps, p.rule.limit_over = PER_SOURCE, pps(count, unit), True
    return [*out, "--hashlimit-name", name]


def _target(p: _Parsed) -> list[str]:
    o, fam = p.opts, p.rule.family
    if o.get("-j") not in _TARGETS:
        raise CommandRejected(f"target {o.get('-j')!r} is not allowed (allowed: {', '.join(_TARGETS)})")
    p.rule.action = _TARGETS[o["-j"]]
    out = ["-j", o["-j"]]
    if "--reject-with" in o:
        if o["-j"] != "REJECT" or o["--reject-with"] not in _REJECT_WITH[fam]:
            raise CommandRejected(f"--reject-with {o['--reject-with']!r} is not allowed here")
        out += ["--reject-with", o["--reject-with"]]
    return out


def _check_modules(p: _Parsed) -> None:
    used = {"limit": "--limit" in p.opts, "set": "--match-set" in p.opts, "hashlimit": "--hashlimit-above" in p.opts}
    for module in p.modules:
        if module in ("tcp", "udp") and p.rule.proto != module:
            raise CommandRejected(f"-m {module} needs -p {module}")
        if module in used and not used[module]:
            raise CommandRejected(f"-m {module} without its options")


def validate(argv: list[str], s: ExecutorSettings) -> Plan:
    prog = argv[0]
    family = 6 if prog == "ip6tables" else 4
    p = _parse(argv, family)
    _check_table_chain(p, s)
    spec = _spec(p, s) + _target(p)
    _check_modules(p)
    p.rule.table, p.rule.chain = p.table, p.chain
    p.rule.syn_only = "--syn" in p.opts
    head = [prog, "-t", p.table]
    identity = " ".join([prog, p.table, p.chain, *spec])
    if p.command == "-D":
        return Plan(prog, [*head, "-D", p.chain, *spec], REMOVES, identity=identity, summary=f"delete {identity}")
    where = [p.chain, str(p.position)] if p.position else [p.chain]
    return Plan(prog, [*head, p.command, *where, *spec], ADDS, undo=[*head, "-D", p.chain, *spec],
                identity=identity, summary=f"add {identity}", match=p.rule)


