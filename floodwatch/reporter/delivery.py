"""The delivery loop: takes due stream heads from the outbox, sends them, applies the verdict.

At most `max_in_flight` requests run at once, one per stream, each under its own timeout: a server
that hangs on one call delays that stream only. Memory is bounded by the in-flight limit and the
metrics batch size; everything else waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from floodwatch.logs import RateLimitedLog
from floodwatch.reporter import dialect
from floodwatch.reporter.client import Answer, ApiClient, ApiUnreachable
from floodwatch.reporter.outbox import METRICS, QUIET, Outbox, Row, merge_samples
from floodwatch.reporter.policy import Outcome, Throttle, Verdict, backoff, classify, parse_retry_after
from floodwatch.settings.reporter import ReporterSettings

AUTH_HEALTH = "api: {status} (check api key / node uuid)"
PCAP_ID_WAIT_ATTEMPTS = 30  # a pcap whose incident never got a server id is dead-lettered after this
MAX_WAIT = 60.0  # the loop looks at the outbox at least this often (a wake() normally comes first)


def json_or_none(answer: Answer) -> tuple[bool, Any]:
    """(ok, value): an empty body is ok (None); a body that is not JSON is not."""
    if not answer.body.strip():
        return True, None
    try:
        return True, json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        return False, None


def describe(answer: Answer) -> str:
    """A short, safe description of an answer for logs: status, type, the server's `error` if any."""
    ok, value = json_or_none(answer)
    detail = ""
    if ok and isinstance(value, dict) and isinstance(value.get("error"), str):
        detail = f": {value['error'][:200]}"
    kind = answer.content_type.split(";")[0] or "no content type"
    return f"{answer.status} ({kind}){detail}"


class Deliverer:
    def __init__(self, outbox: Outbox, client: ApiClient, settings: ReporterSettings, log: Any,
                  set_health: Callable[[str], None], clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.outbox = outbox
        self.client = client
        self.settings = settings
        self.counters: dict[str, Any] = {}  # read by the actor's heartbeat (count_from)
        self.log = log
        self.set_health = set_health
        self.dialect = settings.dialect
        self.clock = clock
        self.rand = rand
        self.throttle = Throttle(clock)
        self.api_ok = True
        self.failure: BaseException | None = None
        self.metrics_busy_upto = 0  # rows up to this id are in flight: compaction leaves them alone
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._say = RateLimitedLog(self.log, 10.0)
        for name in ("delivered", "dead_letters", "retries", "auth_failures", "throttled", "bad_answers"):
            self.counters[name] = 0
        self.counters["dead_letters"] = outbox.dead_letters
        self.counters["last_error"] = ""

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            if self.failure is not None:
                raise self.failure
            now = self.clock()
            free = self.settings.max_in_flight - len(self.tasks)
            paused = self.throttle.remaining()
            if not paused and free > 0:
                for row in self.outbox.heads(now, set(self.tasks), free):
                    self._start(row)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._wait(now, paused, free))

    def _wait(self, now: float, paused: float, free: int) -> float | None:
        """Until the earliest head of a stream not in flight is due (or the pause ends); None: sleep until
        wake(), which a new report and the end of every request give (so a head whose stream is in flight,
        or that waits for a free slot, does not make the loop wake every few ms while the request runs)."""
        if paused:
            return min(MAX_WAIT, paused)
        if free <= 0:
            return None
        due = self.outbox.next_due(set(self.tasks))
        return None if due is None else min(MAX_WAIT, max(0.005, due - now))

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _start(self, row: Row) -> None:
        task = asyncio.ensure_future(self._deliver(row))
        self.tasks[row.stream] = task

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.pop(row.stream, None)
            if row.stream == METRICS:
                self.metrics_busy_upto = 0
            self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                self.failure = t.exception()  # e.g. the disk is gone: run() raises it, the actor exits

        task.add_done_callback(done)

    async def _deliver(self, row: Row) -> None:
        rows = [row]
        try:
            if row.kind == "metrics":
                rows = self._metrics_rows()
                self.metrics_busy_upto = rows[-1].id
                outcome = await self._post(rows, "metrics", self._metrics_body(rows))
            elif row.kind == "incident":
                outcome = await self._send_incident(row)
            elif row.kind == "pcap":
                outcome = await self._send_pcap(row)
            elif row.kind == "heartbeat":
                outcome = await self._post(rows, "heartbeat", dialect.heartbeat(self.dialect, row.body))
            elif row.kind == "ack":
                outcome = await self._post(rows, "commands/ack", row.body)
            else:
                outcome = Outcome(Verdict.DEAD, f"unknown report kind {row.kind!r}")
        except ApiUnreachable as e:
            outcome = Outcome(Verdict.RETRY, f"unreachable: {e}")
        except (KeyError, TypeError, ValueError) as e:  # a report we cannot build: keep it, say why
            self.log.opt(exception=e).error("cannot send {} report {}: {}", row.kind, row.id, e)
            outcome = Outcome(Verdict.RETRY, f"internal error: {type(e).__name__}: {e}")
        self._apply(rows, outcome)

    def _metrics_rows(self) -> list[Row]:
        """The samples of the next POST: a backlog batch; for the flowtriq dialect (one sample per request)
        the quiet samples at the head, up to one metrics_interval of them, which go merged into one."""
        s = self.settings
        if self.dialect != dialect.FLOWTRIQ:
            return self.outbox.metrics_batch(s.metrics_batch)
        rows = self.outbox.metrics_batch(max(1, math.ceil(s.metrics_interval)))
        quiet = 0
        while quiet < len(rows) and rows[quiet].op == QUIET:
            quiet += 1
        return rows[:max(1, quiet)]

    def _metrics_body(self, rows: list[Row]) -> Any:
        if len(rows) == 1:
            return rows[0].body
        if self.dialect == dialect.FLOWTRIQ:
            return functools.reduce(merge_samples, (r.body for r in rows))
        return [r.body for r in rows]

    async def _post(self, rows: list[Row], path: str, body: Any) -> Outcome:
        answer = await self.client.call("POST", path, json=body)
        outcome = self._judge(answer)
        if outcome.verdict is Verdict.DELIVERED and not json_or_none(answer)[0]:
            return self._bad_answer(answer, "not JSON")
        return outcome

    def _judge(self, answer: Answer) -> Outcome:
        retry_after = parse_retry_after(answer.retry_after, self.clock())
        outcome = classify(answer.status, retry_after)
        if outcome.verdict is Verdict.DEAD:
            return Outcome(Verdict.DEAD, f"server refused the report: {describe(answer)}")
        return outcome

    def _bad_answer(self, answer: Answer, why: str) -> Outcome:
        self.counters["bad_answers"] += 1
        return Outcome(Verdict.RETRY, f"bad answer from the server ({why}): {describe(answer)}")

    def _ref(self, incident_key: str) -> int | str | None:
        """The server's id (published) or uuid (flowtriq) of an incident this agent opened there."""
        if self.dialect == dialect.PUBLISHED:
            return self.outbox.incident_id(incident_key)
        return self.outbox.incident_ref(incident_key)

    def _remember(self, incident_key: str, ref: int | str) -> None:
        if isinstance(ref, int):
            self.outbox.set_incident_id(incident_key, ref)
        else:
            self.outbox.set_incident_ref(incident_key, ref)

    async def _open(self, row: Row) -> tuple[int | str | None, Outcome]:
        """POST the incident without an id: the server creates it, or (same incident_key) finds it."""
        path, body = dialect.incident_request(self.dialect, "open", row.body, None)
        answer = await self.client.call("POST", path, json=body)
        outcome = self._judge(answer)
        if outcome.verdict is not Verdict.DELIVERED:
            return None, outcome
        ref = dialect.ref_of(self.dialect, json_or_none(answer)[1])
        if ref is None:
            what = "integer incident_id" if self.dialect == dialect.PUBLISHED else "uuid"
            return None, self._bad_answer(answer, f"no {what}")
        self._remember(row.incident_key, ref)
        return ref, outcome

    async def _send_incident(self, row: Row) -> Outcome:
        ref = self._ref(row.incident_key)
        if ref is None:
            ref, outcome = await self._open(row)
            if ref is None or row.op == "open":
                return outcome
            # an update or resolution whose open this agent never delivered: now it has an id
        path, body = dialect.incident_request(self.dialect, row.op, row.body, ref)
        return await self._post([row], path, body)

    async def _send_pcap(self, row: Row) -> Outcome:
        ref = self._ref(row.incident_key)
        if ref is None:
            if row.attempts >= PCAP_ID_WAIT_ATTEMPTS:
                return Outcome(Verdict.DEAD, "the incident of this pcap never got a server id")
            return Outcome(Verdict.RETRY, "pcap waits for its incident's server id")
        path = Path(row.body["path"])
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            return Outcome(Verdict.DEAD, f"pcap {path} cannot be opened: {e.strerror}")
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Outcome(Verdict.DEAD, f"pcap {path} is not a regular file")
            if st.st_size > self.settings.max_upload_bytes:
                return Outcome(Verdict.DEAD, f"pcap {path} has {st.st_size} bytes, over the upload limit")
            answer = await dialect.upload_pcap(self.client, self.dialect, ref, f, path.name, st.st_size,
                                               self.settings.upload_timeout,
                                               dialect.upload_id(row.incident_key, row.id))
        return self._judge(answer)

    # -- verdicts ----------------------------------------------------------------------------------
    def _apply(self, rows: list[Row], outcome: Outcome) -> None:
        head = rows[0]
        v = outcome.verdict
        if v is Verdict.DELIVERED:
            self.outbox.delivered(rows)
            self.counters["delivered"] += len(rows)
            if not self.api_ok:
                self.log.info("api answers again; delivering the queue ({} queued)", self.outbox.pending)
            self.api_ok = True
            self.set_health("ok")
            return
        if v is Verdict.DEAD:
            for r in rows:
                self.outbox.dead_letter(r, outcome.reason)
            self.counters["dead_letters"] = self.outbox.dead_letters
            self.log.warning("dead-lettered {} {} report(s) (incident_key={!r}): {}", len(rows), head.kind,
                             head.incident_key, outcome.reason)
            return
        self._keep(head, outcome)

    def _keep(self, head: Row, outcome: Outcome) -> None:
        v = outcome.verdict
        s = self.settings
        delay = backoff(head.attempts + 1, s.backoff_initial, s.backoff_max, self.rand)
        if v is Verdict.THROTTLED:
            self.counters["throttled"] += 1
            if outcome.retry_after is not None:
                delay = outcome.retry_after
            self.throttle.pause(delay)
        elif v is Verdict.AUTH:
            self.counters["auth_failures"] += 1
            delay = s.auth_backoff
            self.throttle.pause(delay)
            self.set_health(AUTH_HEALTH.format(status=outcome.reason))
        elif outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        if v is not Verdict.AUTH:
            self.set_health(f"api: {outcome.reason[:160]} ({self.outbox.pending} queued)")
        self.counters["retries"] += 1
        self.counters["last_error"] = outcome.reason[:300]
        self.api_ok = False
        self.outbox.retry_later(head, delay, outcome.reason)
        self._say.say("ERROR" if v is Verdict.AUTH else "WARNING", v.value,
                      "{} report not delivered: {}; retry in {:.1f} s", head.kind, outcome.reason, delay)
