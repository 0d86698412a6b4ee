"""The HTTP side: an aiohttp session that authenticates, verifies TLS and never leaks the API key.

TLS verification is on unless `tls_verify = false`, which is logged as a warning at every start.
The key travels only in the Authorization header; every error text we produce passes `scrub()`.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from loguru import logger

from floodwatch import __version__
from floodwatch.errors import ConfigError, FloodwatchError
from floodwatch.settings.reporter import ReporterSettings

API_KEY_ENV = "FLOODWATCH_API_KEY"


class ApiUnreachable(FloodwatchError):
    """No HTTP answer: connection refused or reset, DNS, TLS failure or a timeout."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None
    content_type: str


def resolve_api_key(settings: ReporterSettings, env: dict[str, str] | None = None) -> str:
    """The key from $FLOODWATCH_API_KEY, else api_key_file (refused when others may read it), else api_key."""
    env = dict(os.environ) if env is None else env
    if env.get(API_KEY_ENV, "").strip():
        return env[API_KEY_ENV].strip()
    if settings.api_key_file:
        path = Path(settings.api_key_file)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"reporter.api_key_file {path}: readable by group or others "
                    f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
                )
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"reporter.api_key_file {path}: cannot read: {e.strerror or e}") from e
    return settings.api_key.strip()


def local_node_credentials(path: Path) -> tuple[str, str] | None:
    """(node_uuid, api_key) the embedded server wrote for this host, or None when absent or unusable."""
    try:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.bind(actor="reporter").warning("{}: readable by group or others; not used", path)
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    uuid, key = data.get("node_uuid"), data.get("api_key")
    if isinstance(uuid, str) and isinstance(key, str) and uuid and key:
        return uuid, key
    return None


def ssl_context(settings: ReporterSettings) -> ssl.SSLContext | bool:
    """The TLS policy for the session: verified (system or custom CAs), or off with a loud warning."""
    if not settings.tls_verify:
        logger.bind(actor="reporter").warning(
            "TLS VERIFICATION IS OFF (reporter.tls_verify = false): anyone on the path can read the "
            "API key and forge answers; use reporter.ca_bundle for a private CA instead"
        )
        return False
    if not settings.ca_bundle:
        # aiohttp's own verified context: the system's CAs, made once when aiohttp is imported (in the
        # supervisor's image, which every actor shares), where a context of ours would load the CA store
        # again into this process's memory (0.7 MB). Same policy: Python >= 3.10 contexts refuse TLS < 1.2.
        return True
    try:
        ctx = ssl.create_default_context(cafile=settings.ca_bundle)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"reporter.ca_bundle {settings.ca_bundle}: {e}") from e
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def warn_if_cleartext(url: str) -> None:
    """The key would cross the network in clear text: say so (loopback is fine)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost":
        return
    try:
        if ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    logger.bind(actor="reporter").warning("reporter.url {} is plain http: the API key is sent unencrypted", url)


class ApiClient:
    """One aiohttp session for the agent's calls. Construct inside the running event loop."""

    def __init__(self, settings: ReporterSettings, api_key: str, node_uuid: str) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self._key = api_key
        warn_if_cleartext(settings.url)
        connector = aiohttp.TCPConnector(ssl=ssl_context(settings), limit=settings.max_in_flight + 2)
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "Authorization": f"Bearer {api_key}",
                "X-Node-UUID": node_uuid,
                "User-Agent": f"floodwatch/{__version__}",
            },
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout, connect=settings.connect_timeout),
            raise_for_status=False,
        )

    def scrub(self, text: str) -> str:
        """Any text that could end up in a log or a counter, with the API key masked."""
        return text.replace(self._key, "***") if self._key else text

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                   timeout: float | None = None, headers: dict[str, str] | None = None) -> Answer:
        """One request; ApiUnreachable when there is no HTTP answer. The body is read up to the limit."""
        url = f"{self.base}/{path.lstrip('/')}"
        kw: dict[str, Any] = {"json": json} if data is None else {"data": data}
        if headers:
            kw["headers"] = headers
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout, connect=self.settings.connect_timeout)
        try:
            async with self.session.request(method, url, allow_redirects=False, **kw) as resp:
                body = await self._read(resp)
                return Answer(resp.status, body, resp.headers.get("Retry-After"),
                              resp.headers.get("Content-Type", ""))
        except TimeoutError as e:
            raise ApiUnreachable(f"{method} {path}: no answer within the timeout") from e
        except aiohttp.ClientError as e:
            raise ApiUnreachable(self.scrub(f"{method} {path}: {type(e).__name__}: {e}")) from e
        except (OSError, asyncio.IncompleteReadError) as e:
            raise ApiUnreachable(self.scrub(f"{method} {path}: {type(e).__name__}: {e}")) from e

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                return b"".join(chunks)[:0] + b"\x00too-long"  # marked: never valid JSON
            chunks.append(chunk)
        return b"".join(chunks)
