"""`floodwatch server`: run the API server, and operator commands that work on its database directly
(with the server up or down). `python -m floodwatch.server ...` is the same command.

    floodwatch server --listen 127.0.0.1:8787 --db PATH        run it (API under /api/v1/agent/)
    (every command: --db PATH for SQLite, or --database postgresql://USER@HOST:PORT/DB [--password-file F],
    or --config FILE whose [apiserver] names either)
    floodwatch server add-node NAME --db PATH [--json]          new node: prints its UUID and key once
    floodwatch server nodes --db PATH [--json]
    floodwatch server remove-node NODE --db PATH [--json]       the node and everything it sent
    floodwatch server incidents --db PATH [--json] [--node N] [--status S]
    floodwatch server incident show ID --db PATH [--json]
    floodwatch server queue-command NODE "CMD" --db PATH [--json-command] [--json]
    floodwatch server commands NODE --db PATH [--json]
    floodwatch server set-threshold NODE PPS --db PATH [--bps BPS]
    floodwatch server fetch-pcap ID --out FILE --db PATH
    floodwatch server admin-token --db PATH [--name NAME] [--json]
    floodwatch server notify test CHANNEL --config FILE         send a test message, print the answer
    floodwatch server notify status --config FILE [--json]      each channel's deliveries and last error
    floodwatch server migrate --db PATH [--json]                upgrade an older database's schema
    floodwatch server export --db PATH --out FILE               the data, for import
    floodwatch server import FILE --database postgresql://... [--password-file F]
    floodwatch server add-user NAME --role viewer|operator|admin --db PATH [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from floodwatch.errors import ConfigError, FloodwatchError
from floodwatch.paths import server_files
from floodwatch.server import auth, migrations
from floodwatch.server.backend import open_store
from floodwatch.server.notify import cli as notify_cli
from floodwatch.server.store import Conflict
from floodwatch.settings.apiserver import ApiserverSettings
from floodwatch.settings.notify import NotifySettings


def _settings(args: argparse.Namespace) -> tuple[ApiserverSettings, str]:
    """The [apiserver] settings (from --config when given) with the command line's overrides."""
    from floodwatch.config import load_config

    state_dir = "/var/lib/floodwatch"
    settings = ApiserverSettings()
    path = _config_path(args)
    if path:
        config = load_config(path)
        settings, state_dir = config.apiserver, config.agent.state_dir
    overrides = {k: getattr(args, k) for k in ("listen", "db_path", "database", "database_password_file",
                                                "pcap_dir", "rate_limit", "rate_burst",
                                                "max_upload_bytes", "read_timeout", "metrics_retention_days",
                                                "admin_token_file", "synchronous", "tls_cert", "tls_key",
                                                "header_timeout", "keepalive_timeout", "max_connections",
                                                "max_connections_per_address", "trusted_proxies")
                 if getattr(args, k, None) is not None}
    if getattr(args, "db_path", None) is not None and getattr(args, "database", None) is None:
        overrides.update(database="", database_password_file="")  # --db PATH: that SQLite file
    settings = dataclasses.replace(settings, **overrides)
    try:
        settings.validate()
    except ValueError as e:
        raise ConfigError(f"server: {e}") from e
    return settings, state_dir


def _config_path(args: argparse.Namespace) -> str | None:
    from floodwatch.config import default_config_path

    path = getattr(args, "config", None)
    explicit = getattr(args, "db_path", None) is not None or getattr(args, "database", None) is not None
    if path is None and not explicit and default_config_path().is_file():
        path = default_config_path()  # no --db: the database the installed agent's config names
    return str(path) if path else None


def _notify_settings(args: argparse.Namespace) -> NotifySettings:
    """The [notify] section of the config in effect (none: no channels)."""
    from floodwatch.config import load_config

    path = _config_path(args)
    return load_config(path).notify if path else NotifySettings()


def _store(args: argparse.Namespace, create: bool = False) -> tuple[Any, ApiserverSettings, Path]:
    """The store the settings name (SQLite, created when `create`; or PostgreSQL), settings, pcap dir."""
    settings, state_dir = _settings(args)
    db, pcaps = server_files(settings, state_dir)
    return open_store(settings, db, create=create), settings, pcaps


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=None))
    else:
        print("\n".join(lines))


def _node_or_exit(store: Any, ref: str) -> dict[str, Any]:
    node = store.find_node(ref)
    if node is None:
        raise FloodwatchError(f"no node {ref!r} (give its name, UUID or id)")
    return node


def cmd_serve(args: argparse.Namespace) -> int:
    from floodwatch.server.run import serve

    settings, state_dir = _settings(args)
    db, pcaps = server_files(settings, state_dir)
    return serve(settings, db, pcaps, port_file=args.port_file, notify=_notify_settings(args))


def cmd_add_node(args: argparse.Namespace) -> int:
    store, _, _ = _store(args, create=True)
    key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
    try:
        node = store.add_node(args.name, node_uuid, auth.hash_secret(key), time.time())
    except Conflict as e:
        raise FloodwatchError(str(e)) from e
    _print(args, {"node_uuid": node_uuid, "api_key": key, "node_id": node["node_id"], "name": args.name},
           [f"node {args.name} (id {node['node_id']})", f"node_uuid: {node_uuid}", f"api_key:   {key}",
            "The key is shown only now; the server keeps only its hash."])
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    store, settings, _ = _store(args)
    nodes = store.list_nodes(time.time(), settings.offline_after)
    _print(args, nodes, [f"{'id':>4} {'name':<20} {'status':<8} {'last seen':<25} {'version':<10} uuid"] + [
        f"{n['node_id']:>4} {n['name']:<20} {n['status']:<8} {n['last_seen_at'] or '-':<25} "
        f"{n['agent_version'] or '-':<10} {n['node_uuid']}" for n in nodes])
    return 0


def cmd_remove_node(args: argparse.Namespace) -> int:
    from floodwatch.server.upload import delete_captures

    store, _, pcaps = _store(args)
    node = _node_or_exit(store, args.node)
    removed = store.remove_node(node["node_id"])
    if removed is None:
        raise FloodwatchError(f"no node {args.node!r}")
    delete_captures(pcaps, removed["pcap_files"])
    _print(args, {"name": node["name"], "node_uuid": node["node_uuid"], **removed},
           [f"removed node {node['name']} ({node['node_uuid']}): {removed['incidents']} incidents, "
            f"{removed['metrics']} samples, {removed['commands']} commands, {len(removed['pcap_files'])} captures",
            "A running server refuses its agent within 5 s."])
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    node_id = _node_or_exit(store, args.node)["node_id"] if args.node else None
    rows = store.list_incidents(node_id, args.status, args.limit)
    _print(args, rows, [f"{'id':>5} {'node':<14} {'status':<9} {'family':<13} {'severity':<9} "
                        f"{'peak_pps':>10} {'started':<25} pcap"] + [
        f"{r['incident_id']:>5} {r['node_name'][:14]:<14} {r['status']:<9} {r['attack_family']:<13} "
        f"{r['severity']:<9} {r['peak_pps'] or 0:>10} {r['started_at'] or '-':<25} "
        f"{'yes' if r['pcap_stored'] else 'no'}" for r in rows])
    return 0


def cmd_incident_show(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    found = store.incident(args.id, history=True)
    if found is None:
        raise FloodwatchError(f"no incident {args.id}")
    lines = [f"{k}: {json.dumps(v)}" for k, v in found.items() if k != "history"]
    lines += [f"history ({len(found['history'])}):"] + [
        f"  {h['received_at']} {h['kind']}" for h in found["history"]]
    _print(args, found, lines)
    return 0


def cmd_queue_command(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    node = _node_or_exit(store, args.node)
    command: Any = args.command
    if args.json_command:
        try:
            command = json.loads(args.command)
        except ValueError as e:
            raise FloodwatchError(f"--json-command: not JSON: {e}") from e
    command_id = store.queue_command(node["node_id"], command, time.time())
    _print(args, {"command_id": command_id, "node_uuid": node["node_uuid"]},
           [f"queued command {command_id} for {node['name']}"])
    return 0


def cmd_commands(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    rows = store.list_commands(_node_or_exit(store, args.node)["node_id"])
    _print(args, rows, [f"{r['id']:>5} {r['status']:<8} {json.dumps(r['command'])[:60]:<60} {r['error'] or ''}"
                        for r in rows])
    return 0


def cmd_set_threshold(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    node = _node_or_exit(store, args.node)
    changes: dict[str, Any] = {"pps_threshold": args.pps}
    if args.bps is not None:
        changes["bps_threshold"] = args.bps
    store.update_node_config(node["node_id"], changes)
    print(f"{node['name']}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))
    return 0


def cmd_fetch_pcap(args: argparse.Namespace) -> int:
    store, _, pcaps = _store(args)
    meta = store.pcap(args.id)
    if meta is None:
        raise FloodwatchError(f"no capture stored for incident {args.id}")
    with open(pcaps / meta["file_name"], "rb") as src, open(args.out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    print(f"wrote {meta['bytes']} bytes to {args.out} (sha256 {meta['sha256']})")
    return 0


def cmd_admin_token(args: argparse.Namespace) -> int:
    store, _, _ = _store(args, create=True)
    token = auth.new_admin_token()
    store.add_admin_token(args.name, auth.hash_secret(token), time.time())
    _print(args, {"admin_token": token, "name": args.name},
           [f"admin token ({args.name}): {token}", "Shown only now; the server keeps only its hash."])
    return 0


def cmd_add_user(args: argparse.Namespace) -> int:
    from floodwatch.server.web import users

    store, _, _ = _store(args, create=True)
    try:
        made = users.add_user(store, args.name, args.role, time.time())
    except (ValueError, Conflict) as e:
        raise FloodwatchError(str(e)) from e
    _print(args, {"name": made["name"], "password": made["password"]},
           [f"dashboard user {made['name']} ({made['role']})", f"password: {made['password']}",
            "The password is shown only now; the server keeps only a slow salted hash."])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    store, _, _ = _store(args)
    store.close()
    before, applied = store.schema_before, [m.version for m in store.migrated]
    backup = getattr(store, "backup_path", None)  # SQLite only: PostgreSQL is the operator's to back up
    lines = [f"schema version {before} -> {migrations.CURRENT}: applied {', '.join(map(str, applied))}"
             if applied else f"schema version {before}: up to date"]
    if backup:
        lines.append(f"copy of the database before the upgrade: {backup}")
    _print(args, {"before": before, "after": migrations.CURRENT, "applied": applied,
                  "backup": str(backup) if backup else None}, lines)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from floodwatch.server import transfer

    settings, state_dir = _settings(args)
    if settings.database:
        raise FloodwatchError("export: reads a SQLite database (--db PATH); this one is on PostgreSQL "
                              "(use pg_dump there)")
    db, _ = server_files(settings, state_dir)
    out = Path(args.out)
    with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:  # key hashes: 0600
        counts = transfer.export(db, f)
    _print(args, counts, [f"{t}: {n} rows" for t, n in counts.items()] + [f"written to {out}"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from floodwatch.server import backend, transfer

    if not getattr(args, "database", None):
        raise FloodwatchError("import: --database postgresql://USER@HOST:PORT/DB is required")
    with open(args.file) as f:
        counts = transfer.import_pg(f, args.database, backend.read_password(args.database_password_file))
    where = backend.redact(args.database)
    _print(args, counts, [f"{t}: {n} rows" for t, n in counts.items()] + [f"imported into {where}"])
    return 0


def _db_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    d: Any = None if top else argparse.SUPPRESS  # a subcommand must not reset the top-level value
    p.add_argument("--db", dest="db_path", default=d, help="SQLite database (default: <state_dir>/server.db)")
    p.add_argument("--config", default=d, help="read [agent] and [apiserver] from this config file")
    p.add_argument("--pcap-dir", dest="pcap_dir", default=d, help="captures (default: beside the database)")
    p.add_argument("--database", default=d, help="PostgreSQL instead of SQLite: postgresql://USER@HOST:PORT/DB "
                   "(no password in it)")
    p.add_argument("--password-file", dest="database_password_file", default=d,
                   help="the PostgreSQL password (default: $FLOODWATCH_DB_PASSWORD)")


def _sub(sub: Any, name: str, func: Any, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    _db_args(p)
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(server_func=func)
    return p


def build(p: argparse.ArgumentParser) -> None:
    """Add the server's options and subcommands to a parser (ours, or the `floodwatch` CLI's)."""
    _db_args(p, top=True)
    p.add_argument("--listen", default=None, help="HOST:PORT (default 127.0.0.1:8787)")
    p.add_argument("--rate-limit", dest="rate_limit", type=float, default=None, help="requests/s per node (0: off)")
    p.add_argument("--rate-burst", dest="rate_burst", type=int, default=None)
    p.add_argument("--max-upload-bytes", dest="max_upload_bytes", type=int, default=None)
    p.add_argument("--read-timeout", dest="read_timeout", type=float, default=None)
    p.add_argument("--metrics-retention-days", dest="metrics_retention_days", type=float, default=None)
    p.add_argument("--admin-token-file", dest="admin_token_file", default=None)
    p.add_argument("--synchronous", default=None, help="SQLite synchronous mode (FULL, NORMAL)")
    p.add_argument("--tls-cert", dest="tls_cert", default=None, help="PEM certificate: serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", dest="tls_key", default=None, help="PEM private key (not readable by others)")
    p.add_argument("--header-timeout", dest="header_timeout", type=float, default=None,
                   help="seconds for a new connection's first request head (default 10)")
    p.add_argument("--keepalive-timeout", dest="keepalive_timeout", type=float, default=None)
    p.add_argument("--max-connections", dest="max_connections", type=int, default=None)
    p.add_argument("--max-connections-per-address", dest="max_connections_per_address", type=int, default=None)
    p.add_argument("--trusted-proxy", dest="trusted_proxies", action="append", default=None, metavar="CIDR",
                   help="believe X-Forwarded-For from this proxy (repeatable; replaces [apiserver] trusted_proxies)")
    p.add_argument("--port-file", dest="port_file", default=None, help="write the bound port here when ready")
    p.set_defaults(server_func=cmd_serve, json=False)
    sub = p.add_subparsers(dest="server_command", metavar="COMMAND")
    _sub(sub, "add-node", cmd_add_node, "create a node; prints its UUID and API key once").add_argument("name")
    _sub(sub, "nodes", cmd_nodes, "list nodes")
    _sub(sub, "remove-node", cmd_remove_node, "delete a node with everything it sent (its key stops working)"
         ).add_argument("node")
    inc = _sub(sub, "incidents", cmd_incidents, "list incidents (newest first)")
    inc.add_argument("--node", default=None)
    inc.add_argument("--status", choices=("active", "resolved"), default=None)
    inc.add_argument("--limit", type=int, default=1000)
    one = sub.add_parser("incident", help="one incident")
    one_sub = one.add_subparsers(dest="incident_command", required=True, metavar="COMMAND")
    _sub(one_sub, "show", cmd_incident_show, "an incident with its history").add_argument("id", type=int)
    qc = _sub(sub, "queue-command", cmd_queue_command, "queue a command for a node's next config fetch")
    qc.add_argument("node")
    qc.add_argument("command")
    qc.add_argument("--json-command", action="store_true", help="COMMAND is JSON (an object), not a string")
    _sub(sub, "commands", cmd_commands, "a node's commands and their acks").add_argument("node")
    st = _sub(sub, "set-threshold", cmd_set_threshold, "set a node's pps threshold", json_flag=False)
    st.add_argument("node")
    st.add_argument("pps", type=int)
    st.add_argument("--bps", type=int, default=None)
    fp = _sub(sub, "fetch-pcap", cmd_fetch_pcap, "copy an incident's capture to a file", json_flag=False)
    fp.add_argument("id", type=int)
    fp.add_argument("--out", required=True)
    au = _sub(sub, "add-user", cmd_add_user, "create a dashboard user; prints its generated password once")
    au.add_argument("name")
    au.add_argument("--role", choices=("viewer", "operator", "admin"), required=True)
    _sub(sub, "migrate", cmd_migrate, "upgrade the database's schema to this version's (after a copy)")
    _sub(sub, "export", cmd_export, "write the database's data to a file (for import)").add_argument(
        "--out", required=True)
    im = _sub(sub, "import", cmd_import, "load an export into an empty PostgreSQL database")
    im.add_argument("file")
    _sub(sub, "admin-token", cmd_admin_token, "create an admin API token; prints it once").add_argument(
        "--name", default="admin")
    notify_cli.register(sub, _sub)


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.server_func(args))
    except (FloodwatchError, OSError) as e:
        print(f"floodwatch server: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("server", help="the Agent API server and its operator commands")
    build(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="floodwatch server", description=__doc__.split("\n")[0] if __doc__ else "")
    build(p)
    return run(p.parse_args(argv))
