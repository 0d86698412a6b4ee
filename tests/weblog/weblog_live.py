"""nginx with TLS in namespace B writing its access log, clients in namespace A, and the whole agent
(supervisor, every actor, the embedded server) in B with the weblog actor following that log.

Used by tests/weblog/test_weblog_live.py and benchmarks/weblog_latency.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import (
    PYTHON,
    REPO,
    NetnsPair,
    base_config,
    eventually,
    free_port,
    ipc_endpoints,
    stop_process,
    try_status,
    write_config,
)

WEB_SUBTYPES = {"get_flood", "post_flood", "cache_bypass", "path_flood", "login_flood", "bot_flood", "error_flood"}
NGINX_CONF = """
worker_processes 1;
user root;  # the workers reopen the log on SIGUSR1 inside the test's private (0700) directory
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log combined;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    server {{
        listen {ip}:80; listen {ip}:443 ssl http2;
        ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def have_web_tools() -> bool:
    return all(shutil.which(t) for t in ("nginx", "h2load", "openssl"))


@contextmanager
def nginx(pair: NetnsPair, d: Path, key: str = "rsa:2048") -> Iterator[Path]:
    """nginx in namespace B on B's IPv4 address, HTTP on 80 and HTTPS (HTTP/2) on 443 with a self-signed
    certificate made here (`key`: openssl's -newkey, e.g. "ec" for P-256: cheaper handshakes); yields the
    access log. Stopped by its pid."""
    d.mkdir(parents=True, exist_ok=True)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key == "ec" else ["-newkey", key]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "1", "-subj",
                    "/CN=floodwatch-test", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, ip=pair.ip4_b))
    proc = pair.popen(pair.ns_b, ["nginx", "-c", str(conf), "-p", str(d)], stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
    try:
        eventually(lambda: pair.run(pair.ns_a, ["h2load", "-n", "1", f"http://{pair.ip4_b}/"],
                                    check=False).returncode == 0, 20, interval=0.2, message="nginx answering")
        yield d / "access.log"
    finally:
        pid = int((d / "nginx.pid").read_text()) if (d / "nginx.pid").exists() else proc.pid
        os.kill(pid, 15)  # nginx's master: it stops its worker
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def h2load(pair: NetnsPair, seconds: float, http2: bool, clients: int = 40) -> subprocess.Popen[str]:
    """A flood from namespace A: HTTP/2 over TLS (10 streams per connection) or HTTP/1.1 keep-alive."""
    url = f"https://{pair.ip4_b}/" if http2 else f"http://{pair.ip4_b}/"
    argv = ["h2load", "-c", str(clients), "-t", "1", "-D", str(max(1, round(seconds))), "--warm-up-time", "0"]
    argv += ["-m", "10"] if http2 else ["--h1"]
    return pair.popen(pair.ns_a, [*argv, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def flood_report(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, float]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-2000:]
    done = [line for line in out.splitlines() if line.startswith("requests:")]
    rate = [line for line in out.splitlines() if line.startswith("finished in")]
    ok = int(done[0].split()[7]) if done else 0  # "requests: N total, N started, N done, N succeeded, ..."
    rps = float(rate[0].split(",")[1].split()[0]) if rate else 0.0
    return {"succeeded": ok, "rps": rps}


class Agent:
    """The whole agent in namespace B: supervisor, every actor, weblog on, the embedded server."""

    def __init__(self, tmp: Path, pair: NetnsPair, access_log: Path, detect: dict[str, Any] | None = None,
                 weblog: bool = True) -> None:
        self.tmp, self.pair, self.state, self.weblog = tmp, pair, tmp / "state", weblog
        port = free_port()
        cfg = base_config(
            tmp, ipc_endpoints(tmp / "run"),
            capture={"interfaces": [pair.if_b]},
            apiserver={"listen": f"127.0.0.1:{port}"},
            reporter={"url": f"http://127.0.0.1:{port}/api/v1/agent", "heartbeat_interval": 1.0,
                      "config_interval": 1.0, "backoff_initial": 0.2, "backoff_max": 1.0},
            executor={"argv_prefix": ["ip", "netns", "exec", pair.ns_b]},
            weblog={"enabled": weblog, "source": [{"path": str(access_log), "format": "nginx", "site": "shop"}],
                    **({"detect": detect} if detect else {})},
        )
        cfg["supervisor"].update({"heartbeat_timeout": 10.0, "start_timeout": 60.0})
        self.config = write_config(tmp / "floodwatch.toml", cfg)
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.ns_b, PYTHON, "-m", "floodwatch.cli", "run", "--config",
             str(self.config)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        st = try_status(self.config)
        return bool(st) and all(a.get("state") == "running" for a in st.values()) and (
            "weblog" in st or not self.weblog)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 60)

    def incidents(self) -> list[dict[str, Any]]:
        """What the embedded server stored (the `floodwatch server incidents` command)."""
        out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "server", "incidents", "--db",
                              str(self.state / "server.db"), "--json"], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
        assert out.returncode == 0, out.stderr
        found: list[dict[str, Any]] = json.loads(out.stdout)
        return found

    def incident_show(self, incident_id: int) -> dict[str, Any]:
        """One stored incident with its history (`floodwatch server incident show ID --json`)."""
        out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "server", "incident", "show", str(incident_id),
                              "--db", str(self.state / "server.db"), "--json"], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
        assert out.returncode == 0, out.stderr
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    def http_incidents(self) -> list[dict[str, Any]]:
        """The weblog's http_flood incidents (the packet detector may name a plain-HTTP flood too, as
        http_request_flood from its payloads: that one is not counted here)."""
        return [i for i in self.incidents() if i.get("attack_family") == "http_flood"
                and i.get("attack_subtype") in WEB_SUBTYPES]


@contextmanager
def running_agent(tmp: Path, pair: NetnsPair, access_log: Path,
                  detect: dict[str, Any] | None = None, weblog: bool = True) -> Iterator[Agent]:
    agent = Agent(tmp, pair, access_log, detect, weblog)
    agent.start()
    try:
        eventually(agent.running, 90, interval=0.2, message="every actor running")
        yield agent
    finally:
        agent.stop()
        if os.environ.get("FLOODWATCH_TEST_LOGS"):
            print(agent.log.read_text(errors="replace")[-20000:])


def wait_time(pred: Any, timeout: float) -> float:
    """Wall time at which pred() first held (polled every 20 ms)."""
    eventually(pred, timeout, interval=0.02)
    return time.time()
