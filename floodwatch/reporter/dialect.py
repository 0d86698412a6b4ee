"""The two dialects of the Agent API the reporter can speak (../shared/AGENT_API.md, docs/reporter.md).

`published` is parts A and B: `POST incident` (the server's integer `incident_id` in every update),
`POST pcap` with `incident_id` and `file`. `flowtriq` is part C, what the hosted API's own agent sends:
`POST incidents` answered `{"uuid"}`, then `incidents/{uuid}`, `incidents/{uuid}/resolve` and
`incidents/{uuid}/pcap` (multipart field `pcap` up to 2 MB, raw 2 MB chunks above). Both send the
same stored bodies (outbox rows are dialect-free), so durability, order and exactly-once do not depend
on the dialect; only the paths, a few added fields and what is read back differ. Pure functions, except
upload_pcap (one HTTP call per chunk through the given client).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from typing import Any, BinaryIO

import aiohttp

from floodwatch.reporter.client import Answer, ApiClient
from floodwatch.reporter.mapping import parse_iso

PUBLISHED = "published"
FLOWTRIQ = "flowtriq"
DIALECTS = (PUBLISHED, FLOWTRIQ)
CHUNK_BYTES = 2 * 1024 * 1024  # part C: one multipart upload up to this, raw chunks of this size above
PCAP_TYPE = "application/vnd.tcpdump.pcap"
UUID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def incident_request(dialect: str, op: str, body: dict[str, Any], ref: int | str | None) -> tuple[str, dict[str, Any]]:
    """(path, body) of an incident report: op is open, update or resolve; ref is the server's id/uuid
    (None for an open)."""
    if dialect == PUBLISHED:
        return "incident", body if ref is None else {**body, "incident_id": ref}
    if ref is None:
        return "incidents", body
    if op != "resolve":
        return f"incidents/{ref}", body
    out = dict(body)
    with contextlib.suppress(KeyError, TypeError, ValueError):
        out["duration_seconds"] = round(parse_iso(body["ended_at"]) - parse_iso(body["started_at"]), 1)
    return f"incidents/{ref}/resolve", out


def ref_of(dialect: str, value: Any) -> int | str | None:
    """The server's reference to a new incident, from the answer to an open; None when it has none."""
    if not isinstance(value, dict):
        return None
    if dialect == PUBLISHED:
        iid = value.get("incident_id")
        return iid if isinstance(iid, int) and not isinstance(iid, bool) and iid > 0 else None
    uuid = value.get("uuid")
    return uuid if isinstance(uuid, str) and UUID.fullmatch(uuid) else None


def heartbeat(dialect: str, body: dict[str, Any]) -> dict[str, Any]:
    """Part C reads the version as `version`; both names are sent (extra fields are ignored)."""
    return {**body, "version": body.get("agent_version", "")} if dialect == FLOWTRIQ else body


def metrics_batch(dialect: str, configured: int) -> int:
    """Samples per POST /metrics: part C's agent sends one sample per request, so the flowtriq dialect
    never sends an array (a backlog goes one sample at a time, in order)."""
    return 1 if dialect == FLOWTRIQ else configured


def upload_id(incident_key: str, row_id: int) -> str:
    """The same id for every attempt of one queued capture: a retry restarts that upload at chunk 0."""
    return hashlib.sha256(f"{incident_key}|{row_id}".encode()).hexdigest()[:16]


async def upload_pcap(client: ApiClient, dialect: str, ref: int | str, f: BinaryIO, name: str, size: int,
                      timeout: float, uid: str) -> Answer:
    """Send one capture; the answer of the last request (the first one that was not 2xx, if any)."""
    if dialect == PUBLISHED or size <= CHUNK_BYTES:
        form = aiohttp.FormData()
        if dialect == PUBLISHED:
            form.add_field("incident_id", str(ref))
        form.add_field("file" if dialect == PUBLISHED else "pcap", f, filename=name, content_type=PCAP_TYPE)
        return await client.call("POST", "pcap" if dialect == PUBLISHED else f"incidents/{ref}/pcap",
                                 data=form, timeout=timeout)
    total = math.ceil(size / CHUNK_BYTES)
    answer = Answer(0, b"", None, "")
    for index in range(total):
        data = f.read(CHUNK_BYTES)  # one chunk in memory at a time (2 MB)
        headers = {"Content-Type": "application/octet-stream", "X-Upload-Id": uid,
                   "X-Chunk-Index": str(index), "X-Chunk-Total": str(total)}
        answer = await client.call("POST", f"incidents/{ref}/pcap", data=data, headers=headers, timeout=timeout)
        if not 200 <= answer.status < 300:
            return answer
    return answer
