"""What every handler shares: JSON errors, body reading with limits, node authentication."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from floodwatch.server import auth
from floodwatch.server.validate import MAX_DEPTH, check_json

if TYPE_CHECKING:
    from floodwatch.server.app import ApiServer

SERVER_KEY: web.AppKey[ApiServer] = web.AppKey("server")
READ_CHUNK = 64 * 1024


class ApiError(Exception):
    """An HTTP error answered as `{"error": message}` with `status` (the middleware makes the response)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status, headers=self.headers)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """An error to raise: the client gets `status` and `{"error": message}`."""
    return ApiError(status, message, headers)


def server_of(request: web.Request) -> ApiServer:
    return request.app[SERVER_KEY]


async def read_body(request: web.Request, limit: int, idle_timeout: float) -> bytes:
    """The whole request body, refusing more than `limit` bytes (413) or a client silent for too long (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise error(413, f"body: larger than {limit} bytes")
    content = request.content
    if content.is_eof():  # all of it has arrived (an agent's small body: always): no timer, no task, no copy
        whole = content.read_nowait()  # the whole buffer
        if len(whole) > limit:
            raise error(413, f"body: larger than {limit} bytes")
        return whole
    buf = bytearray()
    while True:
        if content.is_eof():
            chunk = content.read_nowait()
        else:
            try:
                chunk = await asyncio.wait_for(content.readany(), idle_timeout)
            except TimeoutError:
                raise error(408, f"body: nothing received for {idle_timeout:g} s") from None
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise error(413, f"body: larger than {limit} bytes")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)  # made once: json.loads with an option makes one a call


def _loads(raw: bytes) -> Any:
    """json.loads(raw, parse_constant=_no_constants), the same answer and errors, without a decoder a call."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


async def read_json(request: web.Request) -> Any:
    """The body as JSON within the limits of validate.check_json (400 naming the field otherwise)."""
    srv = server_of(request)
    raw = await read_body(request, srv.settings.max_body_bytes, srv.settings.read_timeout)
    if not raw.strip():
        raise error(400, "body: empty, expected JSON")
    try:
        body = _loads(raw)
    except RecursionError:
        raise error(400, f"body: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # UnicodeDecodeError is one too
        raise error(400, f"body: not valid JSON ({str(e)[:120]})") from None
    check_json(body)
    return body


async def authenticate(request: web.Request) -> int:
    """The node's id, from `Authorization: Bearer <key>` and `X-Node-UUID`; 401 on any mismatch, 429 when
    the node is over its rate limit."""
    srv = server_of(request)
    key = auth.bearer(request.headers.get("Authorization"))
    node_uuid = auth.canonical_uuid(request.headers.get("X-Node-UUID")) or ""
    node_id = await srv.node_auth(node_uuid, auth.hash_secret(key or ""))  # the same work for any miss
    if key is None or node_id is None:
        srv.count("auth_failures")
        raise error(401, "unauthorized: wrong or missing API key or node UUID",
                    headers={"WWW-Authenticate": 'Bearer realm="floodwatch"'})
    wait = srv.limiter.check(node_uuid)
    if wait > 0:
        srv.count("rate_limited")
        raise error(429, "rate limit exceeded", headers={"Retry-After": auth.retry_after_header(wait)})
    return node_id


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def now() -> float:
    return time.time()
