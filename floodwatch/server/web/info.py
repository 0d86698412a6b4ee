"""`python -m floodwatch.server.web.info CONFIG`: where the dashboard is and where admin's password is
(scripts/run.sh prints it before it starts floodwatch)."""

from __future__ import annotations

import sys
from pathlib import Path

from floodwatch.config import load_config
from floodwatch.paths import server_files
from floodwatch.server.netaddr import parse_listen
from floodwatch.server.run import url_of
from floodwatch.server.web.users import ADMIN_FILE


def describe(config_path: str) -> str:
    config = load_config(config_path)
    host, port = parse_listen(config.apiserver.listen)
    db, _ = server_files(config.apiserver, config.agent.state_dir)
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - naming it, not binding it
    return (f"dashboard: {url_of(shown, port)}/ - user admin, password in {Path(db.parent) / ADMIN_FILE} "
            "(written at the server's first start)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(describe(args[0] if args else "configs/default.toml"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
