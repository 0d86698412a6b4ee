"""The supervisor's parts: core (the Supervisor and its loop), child (a supervised actor and its
state), restart (backoff and flapping), proxy (the event proxy thread), zygote (the fork server),
sdnotify (systemd). `floodwatch run` calls main(); `python supervisor.py` in a checkout is a thin
entry over it.
"""

from __future__ import annotations

import argparse
import os
import sys

from floodwatch.config import load_config
from floodwatch.errors import BusError, ConfigError
from floodwatch.logs import setup_logging
from floodwatch.runtime.supervisor.child import Child, ChildState, actor_names
from floodwatch.runtime.supervisor.core import Outcome, Supervisor, log

__all__ = ["Child", "ChildState", "Outcome", "Supervisor", "actor_names", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="floodwatch run", description="run the floodwatch supervisor")
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"floodwatch: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log, "supervisor")
    try:
        return Supervisor(os.path.abspath(args.config), config).run()
    except BusError as e:
        log.error("{}", e)
        return 2
