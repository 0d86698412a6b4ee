"""`floodwatch server notify test CHANNEL` and `floodwatch server notify status` (the server's config).

`test` sends one message straight to the channel (not through the outbox: it works with the server
down) and prints the receiver's answer; exit status 1 when the receiver refused it or was unreachable.
For PagerDuty it sends a trigger and then its resolve, so nobody stays paged.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from floodwatch.errors import FloodwatchError
from floodwatch.server.notify import outbox
from floodwatch.server.notify.channels import Channel
from floodwatch.server.notify.deliver import Outcome, deliver
from floodwatch.server.notify.render import render
from floodwatch.server.notify.rules import RESOLVE, TEST
from floodwatch.server.notify.service import channels_of
from floodwatch.server.notify.summary import Message


async def send_test(ch: Channel, link_base: str, timeout: float) -> list[Outcome]:
    msg = Message(f"test-{uuid.uuid4()}", TEST, "test", None, [], time.time(), ch.name)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        outcomes = [await deliver(session, ch, render(ch, msg, link_base), timeout)]
        if ch.kind == "pagerduty" and outcomes[0].ok:
            resolve = Message(msg.delivery_id, RESOLVE, "test over", None, [], time.time(), ch.name)
            outcomes.append(await deliver(session, ch, render(ch, resolve, link_base), timeout))
    return outcomes


def cmd_test(args: argparse.Namespace) -> int:
    from floodwatch.server.cli import _notify_settings

    settings = _notify_settings(args)
    channels = {c.name: c for c in channels_of(settings)}
    if args.channel not in channels:
        raise FloodwatchError(f"no channel {args.channel!r} in [notify] (known: {', '.join(channels) or 'none'})")
    ch = channels[args.channel]
    outcomes = asyncio.run(send_test(ch, settings.link_base_url, settings.timeout))
    for o in outcomes:
        print(f"{ch.name} ({ch.kind}): {'delivered' if o.ok else 'FAILED'}: {o.answer}")
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from floodwatch.server.cli import _print, _store

    store, _, _ = _store(args)
    outbox.init(store)
    rows = outbox.channel_status(store)
    _print(args, rows, [f"{r['channel']:<20} pending {r['pending']:>4}  sent {r['sent']:>6}  folded {r['folded']:>5}  "
                        f"failed {r['failed']:>4}  last sent {r['last_sent_at'] or '-'}  "
                        f"last error {r['last_error'] or '-'}" for r in rows])
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = sub.add_parser("notify", help="notification channels ([[notify.channel]] in the config)")
    inner = p.add_subparsers(dest="notify_command", required=True, metavar="COMMAND")
    add(inner, "test", cmd_test, "send a test message to CHANNEL and print the receiver's answer",
        json_flag=False).add_argument("channel")
    add(inner, "status", cmd_status, "messages per channel, last delivery and last error")


