"""The `floodwatch` command: run, status, actor, config check; other areas register their own commands."""

from __future__ import annotations

import argparse
import importlib
import json
import secrets
import sys
import time
from typing import Any

import zmq

from floodwatch import __version__, bus, messages
from floodwatch.config import Config, default_config_path, load_config
from floodwatch.errors import ConfigError
from floodwatch.messages import StatusReply, StatusRequest

# Modules that add subcommands: each has register(subparsers) adding a parser with func(args) -> int.
CORE_COMMANDS = ("run", "status", "actor", "config")
EXTENSIONS = (
    "floodwatch.analyze",
    "floodwatch.server.cli",
    "floodwatch.executor.cli",
    "floodwatch.trafficgen.cli",
)
# The command each extension adds: running one loads only its module (`analyze` starts without the
# server's aiohttp, SQLite and templates); help and unknown commands load them all.
EXTENSION_COMMANDS = {"analyze": "floodwatch.analyze", "server": "floodwatch.server.cli",
                      "command": "floodwatch.executor.cli", "traffic": "floodwatch.trafficgen.cli"}


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help=f"config file (default: {default_config_path()})")


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config or default_config_path())


def cmd_run(args: argparse.Namespace) -> int:
    from floodwatch.runtime.supervisor.main import main

    return main(["--config", str(args.config or default_config_path())])


def cmd_actor(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"actors.{args.name}")
    return int(module.main(["--config", str(args.config or default_config_path())]))


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    from floodwatch.runtime.supervisor.child import actor_names

    print(f"ok: {args.file} (actors: {', '.join(actor_names(config))})")
    return 0


def query_status(config: Config, timeout: float = 3.0, context: zmq.Context | None = None) -> StatusReply:
    """Ask the supervisor over the control socket; ConnectionError when nobody answers. With `context`
    (a caller's own, e.g. the metrics actor's), only the socket is made and closed here."""
    ep = bus.endpoints(config.bus, config.agent)
    ctx = context or zmq.Context()
    sock = bus.dealer(ctx, ep.control, f"cli-{secrets.token_hex(4)}")
    try:
        nonce = secrets.token_hex(4)
        sock.send(messages.encode(StatusRequest(nonce=nonce)))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000), zmq.POLLIN):
                break
            msg = messages.decode(sock.recv_multipart()[-1])
            if isinstance(msg, StatusReply) and msg.nonce == nonce:
                return msg
        raise ConnectionError(f"no supervisor answered at {ep.control} within {timeout:g} s")
    finally:
        sock.close(0)
        if context is None:
            ctx.term()


def _fmt_age(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}s"


def cmd_status(args: argparse.Namespace) -> int:
    try:
        reply = query_status(_load(args), args.timeout)
    except (ConnectionError, ConfigError) as e:
        if args.json:
            print(json.dumps({"error": str(e), "actors": []}))
        else:
            print(f"floodwatch: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({"supervisor": reply.supervisor, "actors": reply.actors}))
        return 0
    sup = reply.supervisor
    print(f"supervisor pid {sup.get('pid')} up {sup.get('uptime', 0):.0f}s ready={sup.get('ready')}")
    print(f"{'actor':<11} {'pid':>7} {'state':<9} {'restarts':>8} {'uptime':>9} {'beat':>7} "
          f"{'cpu_s':>7} {'rss_MB':>7}  health / counters")
    for a in reply.actors:
        counters = " ".join(f"{k}={v}" for k, v in sorted(a.get("counters", {}).items()) if v)
        print(f"{a['name']:<11} {a['pid'] or '-':>7} {a['state']:<9} {a['restarts']:>8} "
              f"{a['uptime']:>8.0f}s {_fmt_age(a.get('last_heartbeat')):>7} {a['cpu_seconds']:>7.2f} "
              f"{a['rss_bytes'] / 1e6:>7.1f}  {a.get('health') or ''} {counters}")
    return 0


def build_parser(extensions: bool | tuple[str, ...] = True) -> argparse.ArgumentParser:
    """The parser with the core commands and `extensions` (True: all, False: none, or these modules)."""
    p = argparse.ArgumentParser(prog="floodwatch", description="DDoS detection and mitigation agent")
    p.add_argument("--version", action="version", version=f"floodwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the supervisor and all actors (what systemd starts)")
    _config_arg(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="show every actor's state over the control socket")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help='one JSON object {"actors": [...]}')
    status.add_argument("--timeout", type=float, default=3.0)
    status.set_defaults(func=cmd_status)

    actor = sub.add_parser("actor", help="run one actor standalone (it needs a supervisor or harness)")
    actor.add_argument("name")
    _config_arg(actor)
    actor.set_defaults(func=cmd_actor)

    config = sub.add_parser("config", help="config file tools")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    wanted = EXTENSIONS if extensions is True else extensions or ()
    for name in wanted:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that area is not built in this version
            raise
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the core commands do not load the others' modules: the supervisor stays small (no sqlite3, aiohttp)
    core = bool(argv) and argv[0] in CORE_COMMANDS
    one = EXTENSION_COMMANDS.get(argv[0]) if argv else None
    args = build_parser(extensions=(one,) if one else not core).parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
