"""`floodwatch command check "<command>"`: validate one command without running it.

Exit 0 and print the argv it would run (a JSON list), or exit 1 and print why it is rejected: the same
grammar, safety policy and host facts (own addresses, gateways, resolvers, API server, SSH peers,
listening ports, sysctl values) as the executor. Rule caps and the ledger are not consulted.
Also runnable as `python -m floodwatch.executor.cli check "<command>"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from floodwatch.config import default_config_path, load_config
from floodwatch.errors import CommandRejected, ConfigError
from floodwatch.executor.core import facts_source
from floodwatch.executor.hostfacts import HostFacts
from floodwatch.executor.plan import REMOVES
from floodwatch.executor.runner import Runner
from floodwatch.executor.validate import validate_command
from floodwatch.settings.executor import ExecutorSettings


def _settings(path: str | None) -> tuple[ExecutorSettings, HostFacts]:
    """The [executor] settings as the actor sees them, and this host's facts read the way it reads them."""
    config = load_config(path or default_config_path())
    s = config.executor
    if not s.tc_interfaces:
        s = dataclasses.replace(s, tc_interfaces=[i for i in config.capture.interfaces if i != "auto"])
    runner = Runner(s.timeout, s.max_output_bytes, s.argv_prefix)
    api_url = config.reporter.url if config.reporter.enabled else ""
    return s, facts_source(s, runner, api_url)()


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings, facts = _settings(args.config)
    except ConfigError as e:
        print(f"floodwatch: {e}", file=sys.stderr)
        return 2
    try:
        plan = validate_command(args.text, settings, facts)
    except CommandRejected as e:
        print(f"rejected: {e}")
        return 1
    print(json.dumps(plan.argv))
    if plan.effect == REMOVES and plan.program in ("iptables", "ip6tables"):
        print("note: runs only if the agent added this rule (it is in the ledger)", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("command", help="mitigation command tools")
    sub = p.add_subparsers(dest="command_command", required=True)
    check = sub.add_parser("check", help="validate a command; print the argv it would run, or why not")
    check.add_argument("text", help='the command, quoted as one argument: "iptables -I INPUT -s 1.2.3.4 -j DROP"')
    check.add_argument("--config", default=None, help=f"config file (default: {default_config_path()})")
    check.set_defaults(func=cmd_check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floodwatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["command", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
