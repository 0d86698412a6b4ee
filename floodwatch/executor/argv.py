"""Command text -> argv, without a shell; anything a shell would interpret is refused outright."""

from __future__ import annotations

import shlex
from typing import Any

from floodwatch.errors import CommandRejected

# Every character a POSIX shell gives a meaning to (besides quotes, refused too: commands need none).
SHELL_META = frozenset(";&|<>()$`\\\"'*?[]{}~#!=%^\n\r\t\v\f\x00")
# `=` is needed by `sysctl -w key=value` and `%` never; both are allowed back only where a grammar says.
ALLOWED_PER_PROGRAM = {"sysctl": frozenset("=")}
PROGRAMS = ("iptables", "ip6tables", "nft", "ipset", "tc", "sysctl")


def split_command(command: Any, max_chars: int = 512, max_arg: int = 128, max_args: int = 64) -> list[str]:
    """The API's `command` -> argv; CommandRejected with the reason for anything unsafe or malformed."""
    if not isinstance(command, str):
        raise CommandRejected(f"command must be a string, got {type(command).__name__}")
    if not command.strip():
        raise CommandRejected("empty command")
    if len(command) > max_chars:
        raise CommandRejected(f"command is {len(command)} characters, over the {max_chars} limit")
    if not command.isascii() or not command.isprintable():
        raise CommandRejected("command has non-ASCII or non-printable characters")
    program = command.split(None, 1)[0]
    allowed = ALLOWED_PER_PROGRAM.get(program, frozenset())
    bad = sorted({c for c in command if c in SHELL_META and c not in allowed})
    if bad:
        raise CommandRejected(f"shell metacharacters are not allowed: {' '.join(repr(c) for c in bad)}")
    try:
        argv = shlex.split(command, comments=False, posix=True)
    except ValueError as e:  # cannot happen without quotes, kept as a guard
        raise CommandRejected(f"cannot split command: {e}") from e
    if len(argv) > max_args:
        raise CommandRejected(f"{len(argv)} arguments, over the {max_args} limit")
    for arg in argv:
        if len(arg) > max_arg:
            raise CommandRejected(f"argument of {len(arg)} characters, over the {max_arg} limit")
    if argv[0] not in PROGRAMS:
        raise CommandRejected(f"program {argv[0]!r} is not allowed (allowed: {', '.join(PROGRAMS)})")
    return argv
