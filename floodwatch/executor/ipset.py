"""ipset: the agent's own sets (names start with ipset_prefix) only.

Allowed:
  ipset create NAME hash:ip|hash:net [family inet|inet6] [timeout N] [maxelem N]
      (-exist is accepted and dropped: a set that exists already is not the command's to destroy later;
      the policies' own sets are refused, see safety.py)
  ipset add NAME ADDR[/PREFIX] [timeout N] [-exist]
  ipset del NAME ADDR[/PREFIX] [-exist]
  ipset test NAME ADDR[/PREFIX]
destroy, flush, swap, rename, restore, save and list are refused.
"""

from __future__ import annotations

from floodwatch.errors import CommandRejected
from floodwatch.executor import addr
from floodwatch.executor.match import ENTRIES, SET, Match
from floodwatch.executor.plan import ADDS, READS, REMOVES, Plan
from floodwatch.settings.executor import ExecutorSettings

_TYPES = ("hash:ip", "hash:net")
_VERBS = {"create": "create", "-N": "create", "add": "add", "-A": "add", "del": "del", "-D": "del",
          "test": "test", "-T": "test"}


def _options(words: list[str], allowed: set[str], s: ExecutorSettings) -> tuple[list[str], bool]:
    """Trailing `key value` options and -exist -> canonical words, exist flag."""
    out: list[str] = []
    exist = False
    seen: set[str] = set()
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-exist", "-!") and "-exist" in allowed:
            exist = True
            i += 1
            continue
        if word not in allowed or word in seen or i + 1 >= len(words):
            raise CommandRejected(f"ipset: option {word!r} is not allowed here")
        seen.add(word)
        value = words[i + 1]
        if word == "timeout":
            value = str(addr.parse_duration(value, s.max_ttl))
        elif word == "maxelem":
            value = str(addr.parse_int(value, 1, 1_000_000, "maxelem"))
        elif word == "family" and value not in ("inet", "inet6"):
            raise CommandRejected(f"ipset: family {value!r} is not inet or inet6")
        out += [word, value]
        i += 2
    return out, exist


def _create(name: str, rest: list[str], s: ExecutorSettings) -> Plan:
    if not rest or rest[0] not in _TYPES:
        raise CommandRejected(f"ipset: set type must be one of {', '.join(_TYPES)}")
    opts, _ = _options(rest[1:], {"family", "timeout", "maxelem", "-exist"}, s)
    argv = ["ipset", "create", name, rest[0], *opts]
    return Plan("ipset", argv, ADDS, undo=["ipset", "destroy", name], identity=f"ipset set {name}",
                summary=f"create ipset {name}", match=Match(SET, "ipset", set_name=name))


def validate(argv: list[str], s: ExecutorSettings) -> Plan:
    if len(argv) < 4 or argv[1] not in _VERBS:
        raise CommandRejected("ipset: expected `ipset create|add|del|test NAME ...` (other verbs are refused)")
    verb = _VERBS[argv[1]]
    name = addr.check_name(argv[2], "ipset", s.ipset_prefix)
    if verb == "create":
        return _create(name, argv[3:], s)
    net = addr.parse_network(argv[3])
    entry = addr.net_text(net)
    identity = f"ipset {name} {entry}"
    if verb == "test":
        _options(argv[4:], set(), s)
        return Plan("ipset", ["ipset", "test", name, entry], READS, identity=identity, summary=f"test {identity}")
    if verb == "del":
        _, exist = _options(argv[4:], {"-exist"}, s)
        return Plan("ipset", ["ipset", "del", name, entry, *(["-exist"] if exist else [])], REMOVES,
                    identity=identity, summary=f"delete {identity}")
    opts, exist = _options(argv[4:], {"timeout", "-exist"}, s)
    return Plan("ipset", ["ipset", "add", name, entry, *opts, *(["-exist"] if exist else [])], ADDS,
                undo=["ipset", "del", name, entry, "-exist"], identity=identity, summary=f"add {identity}",
                match=Match(ENTRIES, "ipset", set_name=name, entries=(net,)))
