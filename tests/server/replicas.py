"""Several `floodwatch server` replicas on one database behind a real nginx (Debian's package).

nginx runs as a throwaway, unprivileged instance: as `nobody`, its own prefix, config, pid file, logs and
temporary directories in a private directory (`-p`, `-c`, `-e`), listening on 127.0.0.1 at a free port.
The replicas are real server processes (tests/server/fwserver_util.ServerProc), each on its own port,
sharing the database (a PostgreSQL `Backend`) and one capture directory (`--pcap-dir`). All of
it is stopped by pid and removed afterwards, also when the test fails.

The proxy's choices (docs/server.md, "Replicas behind nginx"):
- `proxy_next_upstream error timeout`: a replica that refuses the connection, or is found dead before the
  request reached it, is skipped and the request goes to the next one; the failed replica is left out
  for `fail_timeout`.
- Non-idempotent requests (POST) are NOT replayed by nginx once sent to a replica (nginx's default, no
  `non_idempotent`): that replica may have committed them before dying. The agent gets a 502, keeps
  the report in its durable outbox and retries it; the server makes the retry harmless (an incident
  open is found again by its key, a repeated ack answers `duplicate`). GETs are replayed by nginx.
- Keep-alive connections to the replicas (`keepalive`, HTTP/1.1, no `Connection` header), as many idle
  per worker as requests may be in flight (512: with nginx's 128 a burst of a fleet's requests opened
  connections that were closed right after, each a TCP handshake and a new aiohttp handler in a replica),
  each for up to 100,000 requests (nginx closes an upstream connection after 1,000 by default).

Used by tests/server/test_server_replicas.py and benchmarks/server_fleet.py.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import eventually, free_port, pid_alive
from tests.server.fwserver_util import Backend, ServerProc

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 16384; }}
http {{
    {access_log}
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    upstream floodwatch {{
{servers}
        keepalive 512;  # idle connections kept per worker: above the requests in flight, so none is reopened
        keepalive_requests 100000;  # nginx's default (1,000) closes a busy one every few seconds
        keepalive_timeout 20s;  # under the replicas' keepalive_timeout (30 s): never reuse one they close
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        client_max_body_size 101m;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://floodwatch;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;  # the edge: what the client wrote is dropped
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
        }}
        location /api/v1/admin/ {{  # the replicas see every client as 127.0.0.1: the proxy decides
            allow 127.0.0.1; deny all;
            proxy_pass http://floodwatch; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location = /metrics {{ deny all; }}  # scraped on each replica, not through the proxy
    }}
}}
"""
ACCESS_LOG = ("log_format fleet '$msec|$request_method|$uri|$status|$upstream_addr|$upstream_status';\n"
              "    access_log {d}/access.log fleet;")


# Behind a proxy every connection comes from the proxy's address: the per-address cap is the total one,
# above what nginx opens to a replica in a burst (one connection per request in flight).
PROXIED = ["--max-connections", "4000", "--max-connections-per-address", "4000"]


def have_nginx() -> bool:
    return shutil.which("nginx") is not None


class Nginx:
    """An unprivileged nginx in front of `upstreams` (loopback ports), stopped by its pid."""

    def __init__(self, upstreams: list[int], workers: int = 1, access_log: bool = True,
                 fail_timeout: float = 10.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-nginx-"))
        self.port = free_port()
        self.upstreams = upstreams
        self.workers = workers
        self.access_log = access_log
        self.fail_timeout = fail_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = pwd.getpwnam("nobody")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout={self.fail_timeout:g}s;"
                            for p in self.upstreams)
        log = ACCESS_LOG.format(d=self.dir) if self.access_log else "access_log off;"
        return NGINX_CONF.format(d=self.dir, workers=self.workers, servers=servers, port=self.port,
                                 access_log=log)

    def start(self) -> Nginx:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        os.chown(conf, self.user.pw_uid, self.user.pw_gid)
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            user=self.user.pw_uid, group=self.user.pw_gid, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"), cwd=self.dir)  # noqa: SIM115 - the child's
        eventually(self._answers, 20, interval=0.05, message=f"nginx answering on {self.port}: {self.log()}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"nginx exited: {self.log()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.dir / "stderr.log", self.dir / "error.log")
                       if p.exists())

    def access(self) -> list[list[str]]:
        """The access log's lines, split: msec, method, uri, status, upstream addresses (", " between the
        replicas tried, the last one answered), their statuses."""
        p = self.dir / "access.log"
        return [line.split("|") for line in p.read_text().splitlines()] if p.exists() else []

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                workers = _children(self.proc.pid)
                self.proc.send_signal(signal.SIGTERM)  # the master: it stops its workers
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
                for pid in workers:  # a worker its master could not stop: ours, by pid
                    if pid_alive(pid):
                        os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The pids of a process's children (nginx's workers)."""
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Replicas:
    """`count` server processes on one database (`backend`: PostgreSQL for real use) and one shared
    capture directory, behind nginx. `extra`: more server options for every replica."""

    def __init__(self, backend: Backend, count: int = 2, extra: list[str] | None = None,
                 nginx_workers: int = 1, access_log: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-replicas-"))
        self.pcap_dir = self.dir / "pcaps"
        self.ports = [free_port() for _ in range(count)]
        self.servers: list[ServerProc] = []
        for i, port in enumerate(self.ports):
            d = self.dir / f"replica-{i}"
            d.mkdir()
            opts = ["--listen", f"127.0.0.1:{port}", "--pcap-dir", str(self.pcap_dir), *PROXIED, *(extra or [])]
            self.servers.append(ServerProc(d, opts, backend=backend))
        self.store_args = [*backend.args(self.dir / "server.db"), "--pcap-dir", str(self.pcap_dir)]
        self.nginx = Nginx(self.ports, nginx_workers, access_log)

    @property
    def url(self) -> str:
        """The agents' API base through nginx."""
        return f"{self.nginx.url}/api/v1/agent"

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}/api/v1/agent"

    def start(self) -> Replicas:
        for srv in self.servers:
            srv.start()
        self.nginx.start()
        eventually(lambda: self.health(self.nginx.port) == 200, 20, message="the API through nginx")
        return self

    @staticmethod
    def health(port: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/api/v1/health")
            return conn.getresponse().status
        except OSError:
            return 0
        finally:
            conn.close()

    def kill(self, i: int) -> None:
        """SIGKILL replica i (no goodbye: open connections are reset, in-flight requests lost)."""
        self.servers[i].kill9()

    def freeze(self, i: int) -> None:
        """SIGSTOP replica i: what reaches it waits, unanswered (a hung process or machine)."""
        proc = self.servers[i].proc
        assert proc is not None and proc.poll() is None
        os.kill(proc.pid, signal.SIGSTOP)

    def restart(self, i: int) -> None:
        self.servers[i].start()

    def logs(self) -> str:
        return "\n".join(f"--- replica {i}\n{s.log()[-4000:]}" for i, s in enumerate(self.servers)) + (
            f"\n--- nginx\n{self.nginx.log()[-4000:]}")

    def stop(self) -> None:
        try:
            self.nginx.stop()
        finally:
            for srv in self.servers:
                with contextlib.suppress(Exception):
                    srv.stop()
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def replicas(backend: Backend, count: int = 2, extra: list[str] | None = None,
             nginx_workers: int = 1, access_log: bool = True) -> Iterator[Replicas]:
    fleet = Replicas(backend, count, extra, nginx_workers, access_log)
    try:
        yield fleet.start()
    except BaseException:
        if os.environ.get("FLOODWATCH_TEST_LOGS"):
            print(fleet.logs())
        raise
    finally:
        fleet.stop()
