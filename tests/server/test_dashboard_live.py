"""The dashboard's live hub: metric samples reach open pages coalesced per node, and with no page open
nothing is kept and no flush is scheduled (the server sleeps while nobody watches)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from floodwatch.server.web.live import FLUSH_SECONDS, Hub


def _pps(node: int, t: float, pps: float) -> tuple[str, Any]:
    return "pps", (node, t, pps, pps * 800)


def test_hub_flushes_only_for_open_pages_and_keeps_each_nodes_newest_sample() -> None:
    async def scenario() -> None:
        hub = Hub(None, asyncio.get_running_loop())  # type: ignore[arg-type]  # metrics need no store
        task = asyncio.ensure_future(hub.run())
        try:
            hub._take([_pps(1, 10.0, 5.0)])
            assert hub.pending_pps == {} and not hub._has_pending.is_set()  # nobody watches: nothing kept
            page: asyncio.Queue[str] = asyncio.Queue(16)
            hub.clients.add(page)
            hub._take([_pps(1, 11.0, 6.0), _pps(2, 11.0, 7.0)])
            hub._take([_pps(1, 12.0, 8.0), _pps(1, 10.5, 1.0)])  # a late older sample does not win
            msg = await asyncio.wait_for(page.get(), 10 * FLUSH_SECONDS + 5)
            event, data = msg.strip().split("\n")
            assert event == "event: pps"
            assert json.loads(data.removeprefix("data: ")) == {"1": [12.0, 8.0, 6400.0], "2": [11.0, 7.0, 5600.0]}
            await asyncio.sleep(3 * FLUSH_SECONDS)
            assert page.empty()  # nothing new: nothing sent
        finally:
            task.cancel()

    asyncio.run(scenario())
