"""Chunked capture uploads (part C): raw `application/octet-stream` chunks, reassembled on disk.

The official agent sends a capture larger than 2 MB as chunks of 2 MB, in order, each a POST with
`X-Upload-Id`, `X-Chunk-Index` (from 0) and `X-Chunk-Total`; after any failure it starts the same
upload again from chunk 0. So: chunk 0 (re)starts an upload, the next expected chunk is appended, a chunk
already received is acknowledged again without being written (a retry after a lost answer), anything
else is 409. Each chunk is streamed to a private temporary file (never held whole in memory) and hashed
as it arrives; the last one hands the whole file to the caller.

Bounds: at most MAX_OPEN uploads in progress at once, MAX_OPEN_PER_NODE of one node (503 + Retry-After
past either), each at most the
server's `max_upload_bytes` (413), a chunk at most MAX_CHUNK_BYTES; an upload untouched for
`stale_after` seconds is deleted by `expire()` (the server calls it every few seconds). Temporary files
carry upload.TMP_PREFIX, so a restart removes any left over.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from floodwatch.server.http import READ_CHUNK, error
from floodwatch.server.upload import TMP_PREFIX, Received
from floodwatch.server.validate import is_decimal

MAX_OPEN = 16
MAX_OPEN_PER_NODE = 4  # one node cannot take every slot
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # the agent sends 2 MB
MAX_CHUNKS = 100_000
STALE_AFTER = 300.0
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class Partial:
    path: Path
    total: int
    touched: float
    next_index: int = 0
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class ChunkHeaders:
    upload_id: str
    index: int
    total: int


def parse_headers(headers: Any) -> ChunkHeaders:
    """The three chunk headers, checked; 400 naming the bad one."""
    upload_id = headers.get("X-Upload-Id", "")
    if not UPLOAD_ID.fullmatch(upload_id):
        raise error(400, "X-Upload-Id: expected 1 to 64 letters, digits, - or _")
    values = []
    for name, lo in (("X-Chunk-Index", 0), ("X-Chunk-Total", 1)):
        text = headers.get(name, "")
        if not is_decimal(text) or not lo <= int(text) <= MAX_CHUNKS:
            raise error(400, f"{name}: expected an integer between {lo} and {MAX_CHUNKS}")
        values.append(int(text))
    index, total = values
    if index >= total:
        raise error(400, "X-Chunk-Index: must be less than X-Chunk-Total")
    return ChunkHeaders(upload_id, index, total)


class ChunkedUploads:
    def __init__(self, pcap_dir: Path, max_bytes: int, read_timeout: float, stale_after: float = STALE_AFTER,
                 max_open: int = MAX_OPEN, clock: Callable[[], float] = time.monotonic) -> None:
        self.pcap_dir = pcap_dir
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.stale_after = stale_after
        self.max_open = max_open
        self.clock = clock
        self.counters = {"chunks": 0, "chunk_repeats": 0, "uploads_expired": 0, "uploads_busy": 0}
        self._open: dict[tuple[int, int, str], Partial] = {}

    def in_progress(self) -> int:
        return len(self._open)

    def expire(self) -> int:
        """Delete uploads untouched for `stale_after` seconds; returns how many."""
        cutoff = self.clock() - self.stale_after
        stale = [k for k, p in self._open.items() if p.touched < cutoff and not p.lock.locked()]
        for k in stale:
            self._drop(k)
        self.counters["uploads_expired"] += len(stale)
        return len(stale)

    def close(self) -> None:
        for k in list(self._open):
            self._drop(k)

    def _drop(self, key: tuple[int, int, str]) -> None:
        p = self._open.pop(key, None)
        if p is not None:
            p.path.unlink(missing_ok=True)

    def _start(self, key: tuple[int, int, str], total: int) -> Partial:
        self._drop(key)  # a new chunk 0: the agent starts the upload again
        mine = sum(1 for k in self._open if k[0] == key[0])
        if len(self._open) >= self.max_open or mine >= MAX_OPEN_PER_NODE:
            self.counters["uploads_busy"] += 1
            raise error(503, "capture uploads: too many in progress, retry later", headers={"Retry-After": "30"})
        path = self.pcap_dir / f"{TMP_PREFIX}{secrets.token_hex(8)}.part"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        partial = Partial(path, total, self.clock())
        self._open[key] = partial
        return partial

    async def receive(self, request: web.Request, node_id: int, incident_id: int) -> Received | None:
        """Take one chunk. The whole file (the caller stores it, then removes the path) after the last
        chunk; None while more are to come or for a repeated chunk."""
        h = parse_headers(request.headers)
        if request.content_length is not None and request.content_length > MAX_CHUNK_BYTES:
            raise error(413, f"chunk: larger than {MAX_CHUNK_BYTES} bytes")
        self.expire()
        key = (node_id, incident_id, h.upload_id)
        partial = self._start(key, h.total) if h.index == 0 else self._open.get(key)
        if partial is None:
            raise error(409, f"X-Upload-Id: upload {h.upload_id} is unknown or expired; start again at chunk 0")
        async with partial.lock:
            if h.total != partial.total:
                raise error(400, f"X-Chunk-Total: {h.total} differs from this upload's {partial.total}")
            if h.index < partial.next_index:
                self.counters["chunk_repeats"] += 1
                return None  # received already: the answer was lost
            if h.index > partial.next_index:
                raise error(409, f"X-Chunk-Index: expected chunk {partial.next_index}, got {h.index}")
            try:
                await self._append(request, partial)
            except BaseException:
                self._drop(key)
                raise
            partial.next_index += 1
            partial.touched = self.clock()
            self.counters["chunks"] += 1
            if partial.next_index < partial.total:
                return None
            self._open.pop(key, None)
            return Received(partial.path, partial.size, partial.digest.hexdigest())

    async def _append(self, request: web.Request, partial: Partial) -> None:
        fd = os.open(partial.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            chunk_bytes = 0
            while True:
                try:
                    piece = await asyncio.wait_for(request.content.read(READ_CHUNK), self.read_timeout)
                except TimeoutError:
                    raise error(408, f"chunk: nothing received for {self.read_timeout:g} s") from None
                if not piece:
                    break
                chunk_bytes += len(piece)
                if chunk_bytes > MAX_CHUNK_BYTES:
                    raise error(413, f"chunk: larger than {MAX_CHUNK_BYTES} bytes")
                if partial.size + len(piece) > self.max_bytes:
                    raise error(413, f"file: larger than {self.max_bytes} bytes")
                partial.digest.update(piece)
                partial.size += len(piece)
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view):]
            if partial.next_index + 1 == partial.total:
                await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
        finally:
            os.close(fd)
