"""`floodwatch run`: load the config, set up logging, run the supervisor; exit 2 on a bad config or a
control socket that cannot be bound."""

from __future__ import annotations

import argparse
import os
import sys

from floodwatch.config import load_config
from floodwatch.errors import BusError, ConfigError
from floodwatch.logs import setup_logging
from floodwatch.runtime.supervisor.core import Supervisor, log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="floodwatch run", description="run the floodwatch supervisor")
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    path = os.path.abspath(args.config)  # what the actors are given: their Config.path is the same
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"floodwatch: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log, "supervisor")
    try:
        return Supervisor(path, config).run()
    except BusError as e:
        log.error("{}", e)
        return 2
