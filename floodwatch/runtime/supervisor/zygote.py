"""A fork server for actors: imports the heavy modules once, then forks each actor from that image.

The forked actors share those pages copy-on-write, so the whole system's memory (PSS) shrinks and an
actor restarts without paying its imports again. The zygote forks twice per actor: the actor is
re-parented to the supervisor, which is a child subreaper, so the supervisor waits for it as for any
child. Protocol over a socketpair: one JSON line per request {"module", "argv", "env"}, answered
with one line {"pid"} (or {"error"}).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from typing import Any

PRELOAD = (
    "zmq",
    "zmq.asyncio",
    "msgpack",
    "loguru",
    "numpy",
    "floodwatch.runtime.actor",
    "floodwatch.runtime.aio",
    "floodwatch.messages",
    "floodwatch.records",
    "floodwatch.config",
    "aiohttp",  # the reporter and the API server
    "aiohttp.web",  # the API server and the metrics actor
    "sqlite3",
)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants (the actors the zygote forks) are re-parented to us."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def reap_orphans(ours: set[int]) -> None:
    """As a subreaper we inherit orphans (e.g. a tool an actor started before it died): reap those that
    exited, stopping at the first of `ours` (the caller waits for its own children)."""
    for _ in range(64):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in ours:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def _run_actor(req: dict[str, Any], sup_pid: int) -> None:
    """In the grandchild: wait to be re-parented to the supervisor, then run the actor's module."""
    deadline = time.monotonic() + 2.0
    while os.getppid() != sup_pid and time.monotonic() < deadline:
        time.sleep(0.001)
    os.environ.clear()
    os.environ.update(req["env"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.argv = [req["module"], *req["argv"]]
    code = 0
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the actor's crash is reported, then we exit non-zero
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _fork_actor(conn: socket.socket, req: dict[str, Any], sup_pid: int) -> None:
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(r)
            actor = os.fork()
            if actor == 0:
                os.close(w)
                conn.close()
                _run_actor(req, sup_pid)
            os.write(w, str(actor).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        pid = int(f.read() or b"0")
    os.waitpid(middle, 0)  # the middle is gone: the actor now belongs to the supervisor (subreaper)
    conn.sendall((json.dumps({"pid": pid} if pid else {"error": "fork failed"}) + "\n").encode())


def serve(fd: int, sup_pid: int) -> None:
    """The zygote's loop (in its own process)."""
    conn = socket.socket(fileno=fd)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != sup_pid:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the supervisor's business
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()
    gc.freeze()  # keep the preloaded objects' pages shared: the collector will not touch them
    buf = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            os._exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line)
                _fork_actor(conn, req, sup_pid)
            except (ValueError, KeyError, OSError) as e:
                conn.sendall((json.dumps({"error": str(e)}) + "\n").encode())


class ForkedProcess:
    """A Popen-like handle on an actor forked by the zygote (our child through the subreaper)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The supervisor's side: start the zygote, ask it for actors."""

    def __init__(self) -> None:
        import subprocess

        self._sock, theirs = socket.socketpair()
        env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
        code = f"import floodwatch.runtime.supervisor.zygote as z; z.serve({theirs.fileno()}, {os.getpid()})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL)
        theirs.close()
        self._sock.settimeout(30.0)  # the first answer waits for the preload
        self._buf = b""

    def spawn(self, module: str, argv: list[str], env: dict[str, str]) -> ForkedProcess:
        if self.proc.poll() is not None:
            raise OSError(f"the zygote exited with {self.proc.returncode}")
        self._sock.sendall((json.dumps({"module": module, "argv": argv, "env": env}) + "\n").encode())
        while b"\n" not in self._buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise OSError("the zygote closed its socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer = json.loads(line)
        if "pid" not in answer:
            raise OSError(f"the zygote could not fork: {answer.get('error')}")
        return ForkedProcess(int(answer["pid"]))

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(Exception):
            self.proc.terminate()
            self.proc.wait(5)
