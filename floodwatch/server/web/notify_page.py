"""/notifications: each configured channel (name, kind, filters; never its URL or secrets) with its
outbox counts, last delivery and last error, from `outbox.channel_status` (what `notify status` prints)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from floodwatch.server.notify import outbox
from floodwatch.server.notify.channels import Channel
from floodwatch.server.web import dash_of, render, require


def _status(store: Any) -> list[dict[str, Any]]:
    outbox.init(store)  # a server started without channels may have none yet
    return outbox.channel_status(store)


def rows(channels: list[Channel], status: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configured channel, then any channel with messages that is no longer configured."""
    by_name = {s["channel"]: s for s in status}
    empty = {"pending": 0, "sent": 0, "folded": 0, "failed": 0, "last_sent_at": None, "last_error": None}
    out = [{**empty, **by_name.pop(ch.name, {}), "name": ch.name, "kind": ch.kind, "configured": True,
            "filters": filters(ch)} for ch in channels]
    out += [{**s, "name": s["channel"], "kind": "-", "configured": False, "filters": []} for s in by_name.values()]
    return out


def filters(ch: Channel) -> list[str]:
    out = [f"nodes: {', '.join(ch.nodes)}"] if ch.nodes else []
    out += [f"families: {', '.join(ch.families)}"] if ch.families else []
    out += [f"severity ≥ {ch.min_severity}"] if ch.min_severity != "low" else []
    return [*out, f"≤ {ch.rate_per_minute}/min"]


async def notifications(request: web.Request) -> web.Response:
    require(request)
    srv = dash_of(request).server
    status = await srv.db.call(_status, srv.store)
    channels = srv.notifier.channels if srv.notifier is not None else []
    return render(request, "notifications.html", rows=rows(channels, status))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/notifications", notifications)
