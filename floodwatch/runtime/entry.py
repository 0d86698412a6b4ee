"""The entry point of every actor process: `python -m actors.<name> --config FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loguru import logger

from floodwatch.config import Config, load_config
from floodwatch.errors import ConfigError, FloodwatchError, PeersAbsent
from floodwatch.logs import setup_logging
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.aio import AsyncActor

_handed_down: tuple[str, str, Config] | None = None  # (path, its text, the Config) from the supervisor


def hand_down_config(path: str, text: str, config: Config) -> None:
    """In the supervisor, before it freezes its image and forks the zygote: the Config it loaded from
    `path` (which held `text`), for the actors forked from that image (actor_config)."""
    global _handed_down
    _handed_down = (path, text, config)


def actor_config(path: str) -> tuple[Config, bool]:
    """The config an actor runs with, and whether it is the supervisor's copy.

    An actor forked from the zygote uses the Config the supervisor loaded before the fork (its pages are
    shared: loading and validating it again wrote about 2 MB of new pages in each actor) as long as the
    file still holds the text it was loaded from. Otherwise (the file changed since the supervisor
    started, a standalone actor, a plain `python -m` process) the file is loaded again, as always: an
    actor (re)started after the file changed runs with the file as it is now."""
    if _handed_down is not None and _handed_down[0] == path:
        try:
            text: str | None = Path(path).read_text(encoding="utf-8")
        except OSError:
            text = None
        if text == _handed_down[1]:
            return _handed_down[2], True
    return load_config(path), False


def actor_arg_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m actors.{name}", description=f"floodwatch {name} actor")
    p.add_argument("--config", required=True, help="TOML config file")
    return p


def config_arg(name: str, argv: list[str] | None) -> str:
    """The --config FILE an actor is started with. The supervisor's own form (exactly `--config FILE`)
    is read without argparse: an actor forked from the supervisor's image would otherwise run argparse's
    code and write (so copy) some 80 KB of that image's pages for nothing; anything else (--help, a
    typo) goes through argparse and its messages."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--config" and not args[1].startswith("-"):
        return args[1]
    return str(actor_arg_parser(name).parse_args(args).config)


def run_actor(cls: type[Actor] | type[AsyncActor], argv: list[str] | None = None) -> int:  # type: ignore[type-arg]
    """Parse args, load config, log, run, map errors to exits (2: config or no peers, 1: a failure)."""
    path = config_arg(cls.name, argv)
    try:
        config, inherited = actor_config(path)
    except ConfigError as e:
        print(f"floodwatch {cls.name}: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log, cls.name)
    logger.bind(actor=cls.name).debug("config {}: {}", path,
                                      "the supervisor's copy" if inherited else "loaded from the file")
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
