"""POST /pcap: a multipart upload streamed to a private temporary file, never held in memory.

The stored file's name is chosen here (`incident-<id>-<random>.pcap`); the client's file name is never
looked at. Anything that goes wrong (too big, client gone, silent client, unknown incident) removes
the temporary file. One capture per incident: a new upload replaces the old one (a retried upload after
a lost answer stores nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from floodwatch.server.http import READ_CHUNK, authenticate, error, now, ok, server_of
from floodwatch.server.validate import is_decimal

MULTIPART_OVERHEAD = 64 * 1024  # headers and the other fields around the file
TMP_PREFIX = ".upload-"
STORED_NAME = re.compile(r"^incident-\d+-[0-9a-f]{16}\.pcap$")


@dataclass
class Received:
    path: Path
    size: int
    sha256: str


async def _next(coro: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise error(408, f"upload: nothing received for {timeout:g} s") from None
    except ValueError as e:  # aiohttp's multipart reader on a truncated or malformed body
        raise error(400, f"body: malformed multipart ({str(e)[:100]})") from None


async def _small_field(part: BodyPartReader, name: str, timeout: float) -> str:
    data = b""
    while chunk := await _next(part.read_chunk(256), timeout):
        data += chunk
        if len(data) > 64:
            raise error(400, f"{name}: too long")
    return data.decode("utf-8", "replace").strip()


async def _discard(part: BodyPartReader, budget: int, timeout: float) -> int:
    n = 0
    while chunk := await _next(part.read_chunk(4096), timeout):
        n += len(chunk)
        if n > budget:
            raise error(413, f"{part.name or 'a part'}: unexpected fields too large")
    return n


async def _stream_file(part: BodyPartReader, pcap_dir: Path, limit: int, timeout: float) -> Received:
    """Write a file part to a new 0600 temporary file, hashing it; 413 past `limit` bytes."""
    tmp = pcap_dir / f"{TMP_PREFIX}{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := await _next(part.read_chunk(READ_CHUNK), timeout):
            size += len(chunk)
            if size > limit:
                raise error(413, f"file: larger than {limit} bytes")
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return Received(tmp, size, digest.hexdigest())


async def _read_form(request: web.Request, pcap_dir: Path,
                     file_fields: tuple[str, ...] = ("file",)) -> tuple[str | None, Received | None]:
    """(incident_id, the file) of a multipart upload; the file is the first part named in `file_fields`
    (part C's agent names it `pcap`)."""
    srv = server_of(request)
    limit, timeout = srv.settings.max_upload_bytes, srv.settings.read_timeout
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise error(400, "body: expected multipart/form-data with fields incident_id and file") from None
    incident_id: str | None = None
    received: Received | None = None
    extra = 0
    try:
        while (part := await _next(reader.next(), timeout)) is not None:
            if isinstance(part, MultipartReader):
                raise error(400, "body: nested multipart is not accepted")
            if part.name == "incident_id":
                incident_id = await _small_field(part, "incident_id", timeout)
            elif part.name in file_fields and received is None:
                received = await _stream_file(part, pcap_dir, limit, timeout)
            elif part.name in file_fields:
                raise error(400, f"{part.name}: only one file per upload")
            else:  # an unknown field is ignored, as the contract says of extra fields, within a budget
                extra += await _discard(part, MULTIPART_OVERHEAD - extra, timeout)
    except BaseException:
        if received is not None:
            received.path.unlink(missing_ok=True)
        raise
    return incident_id, received


async def pcap(request: web.Request) -> web.Response:
    node_id = await authenticate(request)
    srv = server_of(request)
    limit = srv.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        raise error(413, f"file: larger than {limit} bytes")
    incident_text, received = await _read_form(request, srv.pcap_dir)
    if received is None:
        raise error(400, "file: required")
    try:
        return await _store(request, node_id, incident_text, received)
    finally:
        received.path.unlink(missing_ok=True)  # moved already when it was stored


async def _store(request: web.Request, node_id: int, incident_text: str | None, received: Received) -> web.Response:
    srv = server_of(request)
    if not incident_text:
        raise error(400, "incident_id: required")
    if not is_decimal(incident_text) or not 0 < int(incident_text) < 2**63:
        raise error(400, "incident_id: expected a positive integer")
    incident_id = int(incident_text)
    if await srv.db.call(srv.store.incident_node, incident_id) != node_id:
        raise error(404, f"incident_id: no incident {incident_id} for this node")
    if await srv.db.call(srv.store.pcap_bytes_total) + received.size > srv.settings.pcap_quota_bytes:
        srv.count("pcap_quota_refusals")
        raise error(507, "file: the server's capture storage is full", headers={"Retry-After": "3600"})
    final = srv.pcap_dir / f"incident-{incident_id}-{secrets.token_hex(8)}.pcap"
    os.replace(received.path, final)
    try:
        old = await srv.db.call(srv.store.set_pcap, incident_id, node_id, final.name, received.size,
                                received.sha256, now())
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    if old and STORED_NAME.match(old) and old != final.name:
        (srv.pcap_dir / old).unlink(missing_ok=True)
    srv.count("pcaps_stored")
    return ok({"incident_id": incident_id, "bytes": received.size, "sha256": received.sha256}, status=201)


def delete_captures(pcap_dir: Path, names: list[str]) -> None:
    """Delete stored captures by the names the database holds (only their last part: never a path)."""
    for name in names:
        (pcap_dir / Path(name).name).unlink(missing_ok=True)


def clean_pcap_dir(pcap_dir: Path, known: set[str], older_than: float | None = None) -> int:
    """Remove temporary files of interrupted uploads and stored files the database does not know (a crash
    between the rename and the commit). Returns how many were removed. A process alone with its capture
    directory does it at start for every such file; replicas sharing one (PostgreSQL) only for files not
    written for `older_than` seconds, since another process may be writing or storing them right now."""
    removed = 0
    cutoff = None if older_than is None else time.time() - older_than
    for entry in pcap_dir.iterdir():
        stray = entry.name.startswith(TMP_PREFIX) or (STORED_NAME.match(entry.name) and entry.name not in known)
        if not stray or not entry.is_file() or entry.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError):
            if cutoff is None or entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
                removed += 1
    return removed
