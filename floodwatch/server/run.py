"""Running the server on its own (`floodwatch server`): logging, signals, a ready line, clean stop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import uvloop
from loguru import logger

from floodwatch.errors import ConfigError
from floodwatch.logs import setup_logging
from floodwatch.server.app import AGENT_PREFIX, ApiServer
from floodwatch.server.paths import write_private
from floodwatch.settings.apiserver import ApiserverSettings
from floodwatch.settings.core import LogSettings
from floodwatch.settings.notify import NotifySettings


def url_of(host: str, port: int, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve_async(settings: ApiserverSettings, db: Path, pcaps: Path, port_file: str | None = None,
                      notify: NotifySettings | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ApiServer(settings, db, pcaps, notify)
    try:
        addresses = await server.start()
    except OSError as e:
        await server.stop()
        logger.bind(actor="apiserver").error("cannot listen on {}: {}", settings.listen, e.strerror or e)
        return 1
    except ConfigError as e:
        await server.stop()
        logger.bind(actor="apiserver").error("{}", e)
        return 2
    if port_file:
        write_private(Path(port_file), f"{addresses[0][1]}\n")
    for host, port in addresses:
        url = url_of(host, port, bool(settings.tls_cert))
        print(f"floodwatch server: listening on {url}{AGENT_PREFIX} (db {server.where})", flush=True)
    await stop.wait()
    await server.stop()
    logger.bind(actor="apiserver").info("stopped; {}", server.snapshot())
    return 0


def serve(settings: ApiserverSettings, db: Path, pcaps: Path, port_file: str | None = None,
          notify: NotifySettings | None = None) -> int:
    """On uvloop: the event loop's own work (sockets, timers, callbacks) in C; with asyncio's loop it was
    40 % of a replica's event-loop thread at fleet scale (BENCHMARKS.md, "Fleet scale")."""
    setup_logging(LogSettings(), "apiserver")
    return uvloop.run(serve_async(settings, db, pcaps, port_file, notify))
