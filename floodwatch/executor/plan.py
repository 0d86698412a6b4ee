"""What a validated command will do: the argv to run, how to undo it, and what it matches (for safety.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from floodwatch.executor.match import OTHER, Match

# What a plan does to the agent's state:
ADDS = "adds"  # adds a rule/element/qdisc/setting that stays in force (remembered, undone later)
REMOVES = "removes"  # removes something the agent added (the ledger must hold it for iptables -D)
READS = "reads"  # changes nothing (ipset test)


@dataclass(frozen=True)
class Plan:
    program: str
    argv: list[str]  # the full argv, program first, rendered from the parsed command
    effect: str  # ADDS | REMOVES | READS
    undo: list[str] | None = None  # argv that reverses an ADDS plan (None: computed after the run)
    identity: str = ""  # what is added/removed, the same text for a rule and its removal
    summary: str = ""
    sysctl_key: str = ""  # sysctl: the key, so the executor can read the old value to restore it
    nft_rule: tuple[str, str] = ("", "")  # nft add rule: (table words, chain) to build the delete by handle
    notes: list[str] = field(default_factory=list)
    match: Match = field(default_factory=lambda: Match(OTHER, ""))
