"""Chunked capture uploads (part C): raw `application/octet-stream` chunks, reassembled on disk.

The official agent sends a capture larger than 2 MB as chunks of 2 MB, in order, each a POST with
`X-Upload-Id`, `X-Chunk-Index` (from 0) and `X-Chunk-Total`; after any failure it starts the same
upload again from chunk 0. So: chunk 0 (re)starts an upload, the next expected chunk is appended, a chunk
already received is acknowledged again without being written (a retry after a lost answer), anything
else is 409. Each chunk is streamed to a private file (never held whole in memory).

Replicas: an upload's state lives beside its data in `<pcap_dir>/.upload-chunks/` (0700), not in a
process, so consecutive chunks may land on different server processes sharing the capture directory
(as replicas must, to serve captures): `<node_id>-<key>.part` (the bytes) and `<node_id>-<key>.json`
(chunks and bytes received, total, last touched), `key` a hash of (node, incident, upload id), never a
name from the network. A chunk is taken under an exclusive flock of the .part file (a concurrent repeat
of the same chunk gets 409, and the agent starts again); the data is written first, then the state
replaced atomically, so a process killed mid-chunk leaves the previous state, and the next attempt
first cuts the file back to it. The SHA-256 is computed when the last chunk is in.

Bounds: at most MAX_OPEN uploads in progress at once, MAX_OPEN_PER_NODE of one node (503 + Retry-After
past either; counted in the directory, so across replicas), each at most the server's
`max_upload_bytes` (413), a chunk at most MAX_CHUNK_BYTES; an upload untouched for `stale_after`
seconds is deleted by `expire()` (every replica runs it every few seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from floodwatch.server.http import READ_CHUNK, ApiError, error
from floodwatch.server.upload import TMP_PREFIX, Received
from floodwatch.server.validate import is_decimal

MAX_OPEN = 16
MAX_OPEN_PER_NODE = 4  # one node cannot take every slot
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # the agent sends 2 MB
MAX_CHUNKS = 100_000
STALE_AFTER = 300.0
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHUNK_DIR = ".upload-chunks"
Key = tuple[int, int, str]  # (node_id, incident_id, upload id)


@dataclass
class State:
    total: int
    next_index: int
    size: int
    touched: float


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


def _busy() -> ApiError:
    return error(409, "chunk: this upload is receiving another request; start again at chunk 0")


class ChunkedUploads:
    def __init__(self, pcap_dir: Path, max_bytes: int, read_timeout: float, stale_after: float = STALE_AFTER,
                 max_open: int = MAX_OPEN, clock: Callable[[], float] = time.time) -> None:
        self.dir = pcap_dir / CHUNK_DIR
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.stale_after = stale_after
        self.max_open = max_open
        self.clock = clock  # wall time: replicas compare what each wrote
        self.counters = {"chunks": 0, "chunk_repeats": 0, "uploads_expired": 0, "uploads_busy": 0}
        self.dir.mkdir(mode=0o700, exist_ok=True)

    # -- the state on disk -------------------------------------------------------------------------
    def _base(self, key: Key) -> Path:
        digest = hashlib.sha256(f"{key[0]}/{key[1]}/{key[2]}".encode()).hexdigest()[:32]
        return self.dir / f"{key[0]}-{digest}"

    def _read(self, base: Path) -> State | None:
        try:
            raw = json.loads(base.with_suffix(".json").read_text())
            return State(int(raw["total"]), int(raw["next"]), int(raw["size"]), float(raw["touched"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, base: Path, st: State) -> None:
        tmp = base.with_suffix(f".json.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"total": st.total, "next": st.next_index, "size": st.size, "touched": st.touched}, f)
        os.replace(tmp, base.with_suffix(".json"))

    def _states(self) -> Iterator[tuple[Path, State | None]]:
        for p in self.dir.glob("*.json"):
            yield p.with_suffix(""), self._read(p.with_suffix(""))

    @contextlib.contextmanager
    def _locked(self, base: Path, create: bool) -> Iterator[int]:
        """The upload's .part file, opened and exclusively locked (409 while another request holds it)."""
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        try:
            fd = os.open(base.with_suffix(".part"), flags, 0o600)
        except FileNotFoundError:
            raise error(409, "X-Upload-Id: this upload is unknown or expired; start again at chunk 0") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy() from None
            yield fd
        finally:
            os.close(fd)

    def _drop(self, base: Path) -> None:
        base.with_suffix(".json").unlink(missing_ok=True)
        base.with_suffix(".part").unlink(missing_ok=True)

    # -- bounds and expiry -------------------------------------------------------------------------
    def in_progress(self) -> int:
        return sum(1 for _ in self.dir.glob("*.json"))

    def expire(self) -> int:
        """Delete uploads untouched for `stale_after` seconds (any process's); returns how many."""
        cutoff = self.clock() - self.stale_after
        n = 0
        for base, st in self._states():
            if st is not None and st.touched >= cutoff:
                continue
            try:
                with self._locked(base, create=False):
                    self._drop(base)
                    n += 1
            except ApiError:  # receiving right now, or gone already
                continue
        self.counters["uploads_expired"] += n
        return n

    def close(self) -> None:
        """Nothing to release: uploads in progress stay for this or another process to finish."""

    def _room(self, key: Key) -> None:
        """503 when a new upload would pass MAX_OPEN (all nodes) or MAX_OPEN_PER_NODE (this node's)."""
        mine = self._base(key)
        others = [base for base, _ in self._states() if base != mine]
        own = sum(1 for base in others if base.name.startswith(f"{key[0]}-"))
        if len(others) >= self.max_open or own >= MAX_OPEN_PER_NODE:
            self.counters["uploads_busy"] += 1
            raise error(503, "capture uploads: too many in progress, retry later", headers={"Retry-After": "30"})

    def _start(self, key: Key, total: int) -> Path:
        """Begin an upload with nothing received yet (what chunk 0 does before its data)."""
        self._room(key)
        base = self._base(key)
        with self._locked(base, create=True) as fd:
            os.ftruncate(fd, 0)
            self._write(base, State(total, 0, 0, self.clock()))
        return base

    # -- a chunk ---------------------------------------------------------------------------------
    async def receive(self, request: web.Request, node_id: int, incident_id: int) -> Received | None:
        """Take one chunk. The whole file (the caller stores it, then removes the path) after the last
        chunk; None while more are to come or for a repeated chunk."""
        h = parse_headers(request.headers)
        if request.content_length is not None and request.content_length > MAX_CHUNK_BYTES:
            raise error(413, f"chunk: larger than {MAX_CHUNK_BYTES} bytes")
        key = (node_id, incident_id, h.upload_id)
        base = self._base(key)
        if h.index == 0:  # the agent starts the upload (again)
            self._room(key)
        with self._locked(base, create=h.index == 0) as fd:
            st = State(h.total, 0, 0, self.clock()) if h.index == 0 else self._read(base)
            if st is None:
                raise error(409, f"X-Upload-Id: upload {h.upload_id} is unknown or expired; start again at chunk 0")
            if h.total != st.total:
                raise error(400, f"X-Chunk-Total: {h.total} differs from this upload's {st.total}")
            if h.index < st.next_index:
                self.counters["chunk_repeats"] += 1
                return None  # received already: the answer was lost
            if h.index > st.next_index:
                raise error(409, f"X-Chunk-Index: expected chunk {st.next_index}, got {h.index}")
            os.ftruncate(fd, st.size)  # what an interrupted attempt at this chunk wrote goes
            try:
                size = await self._append(request, fd, st.size)
            except BaseException:
                self._drop(base)
                raise
            self.counters["chunks"] += 1
            if h.index + 1 < st.total:
                self._write(base, State(st.total, h.index + 1, size, self.clock()))
                return None
            return await self._finish(base, fd, size)

    async def _finish(self, base: Path, fd: int, size: int) -> Received:
        """The last chunk is in: on disk, hashed, moved beside the captures for the caller to store."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, os.fsync, fd)
        digest = await loop.run_in_executor(None, _sha256, fd)
        done = self.dir.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}.part"
        os.replace(base.with_suffix(".part"), done)
        base.with_suffix(".json").unlink(missing_ok=True)
        return Received(done, size, digest)

    async def _append(self, request: web.Request, fd: int, size: int) -> int:
        """Stream the chunk's body to the end of the file; the file's new size."""
        chunk_bytes = 0
        os.lseek(fd, size, os.SEEK_SET)
        while True:
            try:
                piece = await asyncio.wait_for(request.content.read(READ_CHUNK), self.read_timeout)
            except TimeoutError:
                raise error(408, f"chunk: nothing received for {self.read_timeout:g} s") from None
            if not piece:
                return size
            chunk_bytes += len(piece)
            if chunk_bytes > MAX_CHUNK_BYTES:
                raise error(413, f"chunk: larger than {MAX_CHUNK_BYTES} bytes")
            if size + len(piece) > self.max_bytes:
                raise error(413, f"file: larger than {self.max_bytes} bytes")
            size += len(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        digest.update(block)
    return digest.hexdigest()
