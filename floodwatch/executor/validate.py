"""One entry point: command data -> a Plan, or CommandRejected with the reason.

Each program's grammar (one module per program) parses the command into a Plan that carries a Match;
the one safety policy (safety.py) then decides, from that Match and the host's facts, whether the
command only narrows traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from floodwatch.errors import CommandRejected
from floodwatch.executor import ipset, iptables, nft, safety, tcsys
from floodwatch.executor.argv import split_command
from floodwatch.executor.hostfacts import HostFacts
from floodwatch.executor.plan import Plan
from floodwatch.settings.executor import ExecutorSettings

VALIDATORS: dict[str, Callable[[list[str], ExecutorSettings], Plan]] = {
    "iptables": iptables.validate,
    "ip6tables": iptables.validate,
    "nft": nft.validate,
    "ipset": ipset.validate,
    "tc": tcsys.validate_tc,
    "sysctl": tcsys.validate_sysctl,
}


def validate_command(command: Any, settings: ExecutorSettings, facts: HostFacts) -> Plan:
    """Split, parse and judge; the plan's argv is rendered from the parsed command, never copied."""
    argv = split_command(command, settings.max_command_chars, settings.max_arg_chars)
    validator = VALIDATORS.get(argv[0])
    if validator is None:  # split_command already refuses other programs
        raise CommandRejected(f"program {argv[0]!r} is not allowed")
    plan = validator(argv, settings)
    safety.check(plan.match, settings, facts)
    return plan
