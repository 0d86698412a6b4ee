"""One thread owns the database: requests queue store calls, which run in batches, one commit per batch.

This keeps SQLite off the event loop and turns many small writes into one fsync (group commit) while
every caller still learns the outcome of its own call only after the commit: an answer the client
gets means the write is on disk. The calls of a batch to the methods in COALESCED (most of the traffic:
a metrics sample per agent per second, the credentials lookups of the auth cache's misses, heartbeats,
the reads of GET /config) go to the store as one call per method, its batched form `<method>_many`: on
PostgreSQL one statement instead of one or more round trips (and a savepoint) per call. The callers
of a batch are answered with one wake-up of their event loop, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from loguru import logger

from floodwatch.server.store import GroupRetry, Store

T = TypeVar("T")
# store method -> the kind in the counters (db_<kind>_coalesced, db_<kind>_fallbacks); its batched form
# `<method>_many` takes the calls' argument tuples and answers each call's result, all or nothing
COALESCED = {"add_metrics": "metrics", "node_auth": "auth", "record_heartbeat": "heartbeat", "node_config": "config",
             "pending_commands": "commands"}
_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller went away (client disconnected); the write happened regardless
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        _settle(fut, ok, value)


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except GroupRetry:  # the whole batch runs again (_run_batch)
        raise
    except Exception as e:  # noqa: BLE001 - handed to the caller, who maps it
        return False, e


class DbWorker:
    """`threads` database threads take batches from one queue (PostgreSQL: each its own transaction on its
    own pooled connection, so one batch's round trips and commit overlap another's; SQLite: one). Calls
    queued together may then commit in either order: callers that need an order await the first."""

    def __init__(self, store: Store, max_batch: int = 256, threads: int = 1) -> None:
        self.store = store
        self.max_batch = max_batch
        self.stats: dict[str, int] = {"db_calls": 0, "db_commits": 0, "db_errors": 0, "db_retries": 0,
                                      **{f"db_{kind}_{what}": 0 for kind in COALESCED.values()
                                         for what in ("coalesced", "fallbacks")}}
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"server-db-{i}", daemon=True)
                         for i in range(max(1, threads))]
        self._stats_lock = threading.Lock()
        self._stopped = False
        # (seconds, operation) after each store call and each commit ("commit"), in a database thread
        self.on_timing: Callable[[float, str], None] | None = None

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Finish what is queued, then end the threads."""
        alive = [t for t in self._threads if t.is_alive()]
        if not self._stopped and alive:
            self._stopped = True
            for _ in alive:
                self._q.put(None)  # one each: a thread that takes it ends
            for t in alive:
                t.join(30)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (a bound store method) in the database thread; its result after the commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return await fut

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(batch)
            if stop:
                return

    def _count(self, key: str, n: int) -> None:
        with self._stats_lock:  # several database threads
            self.stats[key] += n

    def _timed(self, started: float, operation: str) -> float:
        now = time.perf_counter()
        if self.on_timing is not None:
            self.on_timing(now - started, operation)
        return now

    def _coalesced(self, batch: list[_Item]) -> dict[int, tuple[bool, Any]]:
        """The batch's calls to each method in COALESCED as one store call, where there are several:
        {position in the batch: (ok, result)}."""
        at: dict[str, list[int]] = {}
        for i, (fn, _, _, _) in enumerate(batch):
            name = getattr(fn, "__name__", "")
            if name in COALESCED and getattr(fn, "__self__", None) is self.store:
                at.setdefault(name, []).append(i)
        out: dict[int, tuple[bool, Any]] = {}
        for name, positions in at.items():
            many = getattr(self.store, f"{name}_many", None)
            if len(positions) < 2 or many is None:
                continue
            t = time.perf_counter()
            out.update(self._many(COALESCED[name], many, batch, positions))
            self._timed(t, f"{name}_many")
        return out

    def _many(self, kind: str, many: Callable[[list[tuple[Any, ...]]], list[Any]], batch: list[_Item],
              at: list[int]) -> dict[int, tuple[bool, Any]]:
        """One store call for the calls at `at`. If it fails (rolled back alone), the calls run one by one,
        so a bad one fails alone."""
        try:
            results = many([batch[i][1] for i in at])
        except GroupRetry:  # an optimistic group: the whole batch runs again (_run_batch)
            raise
        except Exception:  # noqa: BLE001 - retried call by call below, each with its own outcome
            self._count(f"db_{kind}_fallbacks", 1)
            return {i: _outcome(batch[i][0], batch[i][1]) for i in at}
        self._count(f"db_{kind}_coalesced", len(at))
        return {i: (True, r) for i, r in zip(at, results, strict=True)}

    def _transaction(self, batch: list[_Item], optimistic: bool) -> list[tuple[bool, Any]]:
        """The batch in one transaction: each call's (ok, result), once committed."""
        results: list[tuple[bool, Any]] = []
        with self.store.group(optimistic=optimistic):
            coalesced = self._coalesced(batch)
            t = time.perf_counter()
            for i, (fn, args, _, _) in enumerate(batch):
                if i in coalesced:
                    results.append(coalesced[i])
                    continue
                results.append(_outcome(fn, args))
                t = self._timed(t, getattr(fn, "__name__", "other"))
        self._timed(t, "commit")
        return results

    def _run_batch(self, batch: list[_Item]) -> None:
        """Optimistic first (PostgreSQL: the batched writes without savepoints); if one of them fails, the batch
        again in a new transaction with a savepoint per call, so that the bad call fails alone."""
        try:
            try:
                results = self._transaction(batch, optimistic=True)
            except GroupRetry:
                self._count("db_retries", 1)
                results = self._transaction(batch, optimistic=False)
        except Exception as e:  # noqa: BLE001 - the commit failed: every caller gets the error
            logger.bind(actor="apiserver").error("database commit failed: {}", e)
            self._count("db_errors", 1)
            results = [(False, e)] * len(batch)
        self._count("db_calls", len(batch))
        self._count("db_commits", 1)
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, _, fut, loop), (ok, value) in zip(batch, results, strict=True):
            answers.setdefault(loop, []).append((fut, ok, value))
        for loop, settled in answers.items():  # one wake-up (a self-pipe write) per loop, not one per call
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle_all, settled)
