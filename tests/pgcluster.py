"""A throwaway PostgreSQL cluster (Debian's postgresql): initdb + pg_ctl as the `postgres` user in a
temporary directory it owns, on 127.0.0.1 at a free port, with password (scram) logins over TCP;
stopped by pg_ctl and removed afterwards."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, durable: bool = False) -> None:
        """`durable`: fsync on, as in production (benchmarks); tests run without it."""
        b = bindir()
        if b is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/setup.sh --dev installs it)")
        self.bin = b
        self.dir = Path(tempfile.mkdtemp(prefix="fw-pg-"))
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "floodwatch"
        self.password = secrets.token_urlsafe(18)
        self.started = False
        self.durable = durable

    def _run(self, *args: str) -> str:
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], user="postgres", group="postgres",
                              cwd=self.dir, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr}{self.log()}")
        return proc.stdout

    def log(self) -> str:
        p = self.dir / "log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", db,
                         "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)

    def new_database(self) -> str:
        """A fresh database owned by the test role; its URL (no password in it)."""
        name = "fw_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
