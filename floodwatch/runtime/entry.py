"""The entry point of every actor process: `python -m actors.<name> --config FILE`."""

from __future__ import annotations

import argparse
import sys

from loguru import logger

from floodwatch.config import load_config
from floodwatch.errors import ConfigError, FloodwatchError, PeersAbsent
from floodwatch.logs import setup_logging
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.aio import AsyncActor


def actor_arg_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m actors.{name}", description=f"floodwatch {name} actor")
    p.add_argument("--config", required=True, help="TOML config file")
    return p


def run_actor(cls: type[Actor] | type[AsyncActor], argv: list[str] | None = None) -> int:  # type: ignore[type-arg]
    """Parse args, load config, log, run, map errors to exits (2: config or no peers, 1: a failure)."""
    args = actor_arg_parser(cls.name).parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"floodwatch {cls.name}: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log, cls.name)
    try:
        return cls(config).run()
    except PeersAbsent as e:
        logger.bind(actor=cls.name).error("{}", e)
        return 2
    except FloodwatchError as e:
        logger.bind(actor=cls.name).opt(exception=e).error("fatal: {}", e)
        return 1
    except Exception as e:  # noqa: BLE001 - let it crash, but say why: the supervisor restarts us
        logger.bind(actor=cls.name).opt(exception=e).error("crashed: {}: {}", type(e).__name__, e)
        return 1
