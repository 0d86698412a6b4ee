"""The server object: storage, the aiohttp application, listening sockets and housekeeping."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from loguru import logger

from floodwatch.errors import StorageError
from floodwatch.server import admin, auth, handlers, partc
from floodwatch.server import web as web_dashboard
from floodwatch.server.authcache import AuthCache
from floodwatch.server.backend import describe, open_store
from floodwatch.server.clientaddr import CLIENT_KEY, FORWARDED_FOR, client_address, parse_trusted
from floodwatch.server.dbthread import DbWorker
from floodwatch.server.http import SERVER_KEY, ApiError, error
from floodwatch.server.listening import ClientAccessLogger, ConnectionLimits, Guard, GuardedHandler, server_tls
from floodwatch.server.netaddr import parse_listen
from floodwatch.server.notify.service import Notifier
from floodwatch.server.paths import write_private
from floodwatch.server.prom import ServerMetrics
from floodwatch.server.store import Conflict, NotFound
from floodwatch.server.upload import clean_pcap_dir, delete_captures
from floodwatch.server.validate import BadField
from floodwatch.server.web.live import RELISTEN_SECONDS
from floodwatch.settings.apiserver import ApiserverSettings
from floodwatch.settings.notify import NotifySettings

AGENT_PREFIX = "/api/v1/agent"
ADMIN_PREFIX = "/api/v1/admin"
AUTH_CACHE_SECONDS = 5.0  # admin tokens: one made by the CLI is also found at once (a miss re-reads)
PG_DB_THREADS = 2  # database threads per server process on PostgreSQL (dbthread.py)
LISTEN_BACKLOG = 4096  # connections waiting to be accepted (the kernel caps it at net.core.somaxconn)
SHARED_LEFTOVER_AGE = 3600.0  # replicas: an upload file not written for this long was abandoned
BAD_REQUEST_STATUSES = frozenset({400, 408, 411, 413, 414, 415, 431})  # the request itself was wrong


def _copy_note(store: Any) -> str:
    path = getattr(store, "backup_path", None)  # SQLite copies its file first; PostgreSQL: the operator's backups
    return f" (copy before: {path})" if path else ""


def static_admin_hashes(settings: ApiserverSettings) -> list[str]:
    """Hashes of the admin tokens given outside the database (a 0600 file, or the environment)."""
    tokens = []
    if settings.admin_token_file:
        try:
            tokens.append(Path(settings.admin_token_file).read_text().strip())
        except OSError as e:
            raise StorageError(f"admin_token_file: cannot read {settings.admin_token_file}: {e.strerror}") from e
    env = os.environ.get("FLOODWATCH_ADMIN_TOKEN", "").strip()
    if env:
        tokens.append(env)
    return [auth.hash_secret(t) for t in tokens if len(t) >= 16]


class ApiServer:
    def __init__(self, settings: ApiserverSettings, db_path: Path, pcap_dir: Path,
                 notify: NotifySettings | None = None) -> None:
        self.settings = settings
        self.pcap_dir = pcap_dir
        self.log = logger.bind(actor="apiserver")
        self.store = open_store(settings, db_path)  # SQLite, or PostgreSQL with [apiserver] database
        self.where = describe(settings, db_path)
        if self.store.migrated:
            self.log.info("database schema upgraded from version {} to {}{}", self.store.schema_before,
                          self.store.migrated[-1].version, _copy_note(self.store))
        # PostgreSQL: database threads on pooled connections, so one batch's round trips and commit overlap
        # another's (at most the pool's size less one, left for the rest); SQLite: one writer
        pg = self.store.dialect == "postgresql"
        threads = min(PG_DB_THREADS, max(1, settings.database_pool_size - 1)) if pg else 1
        self.db = DbWorker(self.store, threads=threads)
        self.limiter = auth.RateLimiter(settings.rate_limit, settings.rate_burst)
        self.trusted_proxies = parse_trusted(settings.trusted_proxies)
        self.counters: dict[str, int] = {"requests": 0, "errors_4xx": 0, "errors_5xx": 0, "bad_requests": 0,
                                         "connections_refused": 0, "header_timeouts": 0}
        self.addresses: list[tuple[str, int]] = []
        self.auth_cache = AuthCache()
        self._admin_cache: tuple[float, list[str]] = (0.0, [])
        self._static_admin = static_admin_hashes(settings)
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.notifier: Notifier | None = None
        if notify is not None and notify.channel:  # ConfigError naming the key when a secret cannot be read
            self.notifier = Notifier(notify, self.store, self.db)
        self.metrics = ServerMetrics(self)  # GET /metrics and request/storage latency (server/prom.py)

    # -- state used by handlers ------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        return {**self.counters, **self.db.stats, **(self.notifier.counters if self.notifier else {})}

    async def node_auth(self, node_uuid: str, presented_hash: str) -> int | None:
        """The node's id when `presented_hash` is the hash of its key, else None. Every miss does the
        same work, whether the node exists or not: one database lookup and one constant-time compare
        (against a dummy hash for an unknown node). Only successes are cached, keyed by the presented
        hash too, so a cache hit needs the key and tells nothing about which nodes exist (authcache.py)."""
        hit = self.auth_cache.get(node_uuid, presented_hash)
        if hit is not None:
            return hit
        generation = self.auth_cache.generation
        found = await self.db.call(self.store.node_auth, node_uuid)
        if not auth.secret_matches_hash(presented_hash, found[1] if found else auth.DUMMY_HASH) or not found:
            return None
        self.auth_cache.put(node_uuid, presented_hash, found[0], generation)
        return found[0]

    async def admin_hashes(self, refresh: bool = False) -> list[str]:
        """Admin token hashes; cached, re-read when asked (after a miss: a token the CLI just made)."""
        t = time.monotonic()
        expires, hashes = self._admin_cache
        if refresh or expires <= t:
            hashes = await self.db.call(self.store.admin_token_hashes)
            self._admin_cache = (t + AUTH_CACHE_SECONDS, hashes)
        return self._static_admin + hashes

    async def create_node(self, name: str) -> dict[str, Any]:
        key = auth.new_api_key()
        node = await self.db.call(self.store.add_node, name, auth.new_node_uuid(), auth.hash_secret(key), time.time())
        return {**node, "api_key": key}

    async def remove_node(self, node_id: int) -> dict[str, Any] | None:
        """Delete the node and all it sent (store.remove_node), its capture files, and its cached
        credentials: its agent is refused (401) from the next request on."""
        removed = await self.db.call(self.store.remove_node, node_id)
        if removed is None:
            return None
        self.auth_cache.forget(node_id)
        delete_captures(self.pcap_dir, removed["pcap_files"])
        return removed

    # -- the application -------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        # `_client` only behind trusted proxies (without, it has nothing to do: one layer less per request)
        middlewares = [self._client] if self.trusted_proxies else []
        app = web.Application(middlewares=[*middlewares, self.metrics.middleware, self._errors],
                              client_max_size=self.settings.max_body_bytes)
        app[SERVER_KEY] = self
        handlers.add_routes(app, AGENT_PREFIX)
        partc.add_routes(app, AGENT_PREFIX)  # the official agent's dialect, beside part A
        admin.add_routes(app, ADMIN_PREFIX)
        app.router.add_get("/api/v1/health", self._health)
        web_dashboard.setup(app, self)  # the pages, /events and /static/ (floodwatch/server/web/)
        self.metrics.add_routes(app)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @web.middleware
    async def _client(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Behind trusted proxies: the rest of the application sees the client's address as
        `request.remote` (clientaddr.py); the access log finds it under CLIENT_KEY."""
        if not self.trusted_proxies:
            return await handler(request)  # type: ignore[no-any-return]
        client, malformed = client_address(request.remote, request.headers.getall(FORWARDED_FOR, []),
                                           self.trusted_proxies)
        if malformed:
            self.count("forwarded_for_malformed")
        if client is None or client == request.remote:
            return await handler(request)  # type: ignore[no-any-return]
        request[CLIENT_KEY] = client
        return await handler(request.clone(remote=client))  # type: ignore[no-any-return]

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.count("requests")
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except web.HTTPException as e:  # aiohttp's own: no route (404), wrong method (405), ...
            if e.status < 400:
                raise
            headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
            return self._answer(request, ApiError(e.status, e.reason.lower(), headers))
        except ApiError as e:
            return self._answer(request, e)
        except (ConnectionError, ClientPayloadError, asyncio.IncompleteReadError):
            self.count("client_disconnects")  # the client went away mid-request: nobody reads an answer
            return self._answer(request, error(400, "the connection was lost before the request was complete"))
        except HttpProcessingError as e:
            return self._answer(request, error(400, f"body: malformed ({e.message.strip()[:100]})"))
        except BadField as e:
            return self._answer(request, error(400, str(e)))
        except NotFound as e:
            return self._answer(request, error(404, str(e)))
        except Conflict as e:
            return self._answer(request, error(409, str(e)))
        except StorageError as e:
            self.log.error("storage: {}", e)
            return self._answer(request, error(503, "storage unavailable, retry later", headers={"Retry-After": "5"}))
        except Exception as e:  # noqa: BLE001 - one bad request must not take the server down
            self.log.opt(exception=e).error("{} {} failed: {}", request.method, request.path, e)
            return self._answer(request, error(500, "internal error"))

    def _answer(self, request: web.Request, e: ApiError) -> web.Response:
        """The error in JSON for the APIs; as an HTML page for the dashboard's pages."""
        self.count("errors_5xx" if e.status >= 500 else "errors_4xx")
        if e.status in BAD_REQUEST_STATUSES:
            self.count("bad_requests")
        if web_dashboard.is_page(request.path) and web_dashboard.DASH_KEY in request.app:
            try:
                return web_dashboard.error_page(request, e.status, e.message, e.headers)
            except Exception as failed:  # noqa: BLE001 - the JSON answer still goes out
                self.log.error("error page for {} failed: {}", request.path, failed)
        return e.response()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> list[tuple[str, int]]:
        """Open storage, clean leftovers, listen. Returns the bound (host, port) pairs."""
        self.pcap_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clean_pcap_dir(self.store.pcap_files())  # before the database thread starts
        tls = server_tls(self.settings.tls_cert, self.settings.tls_key)
        if self.notifier is not None:
            self.notifier.install()  # its outbox rows are written with the incidents (one transaction)
        self.db.start()
        if self.notifier is not None:
            await self.notifier.start()
        self._runner = web.AppRunner(self.make_app(), handle_signals=False)
        await self._runner.setup()
        for listen in [self.settings.listen, *self.settings.extra_listen]:
            host, port = parse_listen(listen)
            server = await asyncio.get_running_loop().create_server(
                self._handler_factory(), host, port, ssl=tls, reuse_address=True, backlog=LISTEN_BACKLOG,
                ssl_handshake_timeout=self.settings.header_timeout if tls else None)
            self._servers.append(server)
            self.addresses += [sock.getsockname()[:2] for sock in server.sockets]
        self._tasks.append(asyncio.ensure_future(self._housekeeping()))
        if self.store.dialect == "postgresql":
            self._tasks.append(asyncio.ensure_future(self._follow_removals(self.store)))
        return self.addresses

    def _handler_factory(self) -> Callable[[], GuardedHandler]:
        """Connections are served by aiohttp's handler behind the guard (listening.py)."""
        assert self._runner is not None and self._runner.server is not None
        manager, loop = self._runner.server, asyncio.get_running_loop()
        guard = Guard(ConnectionLimits(self.settings.max_connections, self.settings.max_connections_per_address),
                      self.settings.header_timeout, self.count)
        access_log = self.log if self.settings.access_log else None
        return lambda: GuardedHandler(manager, guard, loop=loop, keepalive_timeout=self.settings.keepalive_timeout,
                                      access_log=access_log,  # type: ignore[arg-type]
                                      access_log_class=ClientAccessLogger)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
        if self.notifier is not None:
            await self.notifier.stop()
        self.db.stop()
        self.store.close()

    def _clean_pcap_dir(self, known: set[str]) -> None:
        """Leftovers of interrupted uploads: all at start with SQLite (this process is alone with the
        directory); with PostgreSQL, where replicas share it, those untouched for SHARED_LEFTOVER_AGE."""
        shared = self.store.dialect == "postgresql"
        removed = clean_pcap_dir(self.pcap_dir, known, SHARED_LEFTOVER_AGE if shared else None)
        if removed:
            self.log.warning("removed {} leftover file(s) of interrupted uploads in {}", removed, self.pcap_dir)

    async def _follow_removals(self, store: Any) -> None:
        """Forget the cached credentials of nodes removed by any replica or the CLI (NOTIFY); listen again
        after a failure, with the cache on its short bound meanwhile (authcache.py)."""
        from floodwatch.server.pg_store import NODES_CHANNEL  # psycopg: only with PostgreSQL

        wait = RELISTEN_SECONDS[0]
        while True:
            try:
                async for payload in store.listen(NODES_CHANNEL, self._listening):
                    wait = RELISTEN_SECONDS[0]
                    if payload.isdecimal():
                        self.auth_cache.forget(int(payload))
                    else:  # not ours (another program on the channel): counted, skipped
                        self.count("node_notify_bad")
            except StorageError as e:
                self.count("node_listen_errors")
                self.log.warning("node removals: {}; listening again in {:.0f} s", e, wait)
            self.auth_cache.listening(False)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RELISTEN_SECONDS[1])

    def _listening(self) -> None:
        self.count("node_listens")
        self.auth_cache.listening(True)

    async def _housekeeping(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            if self.store.dialect == "postgresql" and rounds % 10 == 0:
                try:
                    known = await self.db.call(self.store.pcap_files)
                    await asyncio.get_running_loop().run_in_executor(None, self._clean_pcap_dir, known)
                except (StorageError, OSError) as e:
                    self.log.error("cleaning {} failed: {}", self.pcap_dir, e)
            try:
                before = time.time() - self.settings.metrics_retention_days * 86400
                pruned = await self.db.call(self.store.prune_metrics, before)
                if pruned:
                    self.count("metrics_pruned", pruned)
            except StorageError as e:
                self.log.error("pruning metrics failed: {}", e)
            await asyncio.sleep(60)

    # -- embedded mode ---------------------------------------------------------------------------
    def provision_local_node(self, path: Path, name: str) -> dict[str, Any] | None:
        """Make sure a node for this host exists and its credentials are in `path` (0600): the reporter's
        out-of-the-box credentials. Call before start(). Returns the credentials."""
        try:
            creds = json.loads(path.read_text())
            if self.store.node_auth(str(creds.get("node_uuid"))) is not None:
                return dict(creds)
        except (OSError, ValueError, AttributeError):
            pass
        key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
        unique = name
        for i in range(2, 1000):
            if self.store.find_node(unique) is None:
                break
            unique = f"{name}-{i}"
        self.store.add_node(unique, node_uuid, auth.hash_secret(key), time.time())
        creds = {"node_uuid": node_uuid, "api_key": key, "name": unique}
        write_private(path, json.dumps(creds) + "\n")
        self.log.info("created node {!r} for this host; credentials in {}", unique, path)
        return creds
