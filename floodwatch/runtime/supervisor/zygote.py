"""A fork server for actors: the heavy modules are imported once, then each actor is forked from that image.

The forked actors share those pages copy-on-write, so the whole system's memory (PSS) shrinks and an
actor restarts without paying its imports again. Besides the modules every actor uses (PRELOAD), the
modules of the actors this supervisor runs are imported (`python -m actors.X` then finds everything it
imports already loaded, shared, and starts in a few milliseconds); nothing that no configured actor
needs is loaded (`floodwatch analyze` loads no aiohttp, SQLite or HTTP server). The supervisor imports
them (preload_here) and then forks the zygote, so the supervisor, the zygote and every actor share one
copy of the interpreter and of all these modules.
The zygote forks twice per actor: the actor is re-parented to the supervisor, which is a child
subreaper, so the supervisor waits for it as for any child. Protocol over a socketpair: one JSON line
per request {"module", "argv", "env"}, answered with one line {"pid"} (or {"error"}).

The zygote lives only while actors start (ForkServer): once every actor runs it exits, and an actor
(re)started later comes from a new zygote forked from the supervisor at that moment.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from floodwatch.runtime.libc import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl, set_process_name
from floodwatch.runtime.supervisor import holes

PRELOAD = (
    "zmq",
    "msgpack",
    "loguru",
    "floodwatch.runtime.actor",
    "floodwatch.runtime.entry",
    "floodwatch.messages",
    "floodwatch.config",
)
MAX_FD = 65536  # file descriptors above this are not closed in the zygote (none are open there)


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
    _set_environ(req["env"])
    set_process_name(f"fw-{req['env'].get('FLOODWATCH_ACTOR') or req['module'].rsplit('.', 1)[-1]}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.argv = [req["module"], *req["argv"]]
    code = 0
    try:
        code = _run_module(req["module"])
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


def _set_environ(env: dict[str, str]) -> None:
    """The actor's environment, changing only what differs from the one inherited (the supervisor's
    plus the actor's name, most of the time): clearing it all would free, then allocate again, every
    variable's objects, writing (so copying) each page of the image that holds one."""
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _run_module(name: str) -> int:
    """`python -m name`: the preloaded module's main() (an actor module's entry, argv from sys.argv), or,
    for a module without one, its code run as __main__ (a fresh copy, so runpy finds no stale one)."""
    module = sys.modules.get(name)
    main = getattr(module, "main", None)
    if callable(main):
        result = main()
        return result if isinstance(result, int) else 0
    sys.modules.pop(name, None)
    runpy.run_module(name, run_name="__main__", alter_sys=True)
    return 0


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


def preload(modules: tuple[str, ...]) -> None:
    """Import what the actors will import. A module that fails here fails again, with its traceback, in
    the actor that runs it (and the supervisor restarts that one): the zygote itself goes on."""
    for name in (*PRELOAD, *modules):
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def preload_here(modules: tuple[str, ...]) -> None:
    """In the supervisor, before it forks the zygote (and before it starts any thread): import what the
    actors will, then freeze it. The zygote then writes nothing of this image, so its pages stay one
    copy for the supervisor, the zygote and every actor (a zygote that imported them itself wrote into
    the supervisor's free pool slots and heap, and each of those pages became a second copy). The
    supervisor runs none of this code, so it does not copy it either. numpy's OpenBLAS starts no thread
    unless OPENBLAS_NUM_THREADS says so (the library reads it when it loads).

    Frozen: neither the supervisor's collector nor the zygote's or an actor's walks these objects (a
    collection writes into every object it visits, copying its page)."""
    ours = "OPENBLAS_NUM_THREADS" not in os.environ  # a value the user set is kept
    if ours:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        preload(modules)
    finally:
        if ours:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
    gc.collect()
    holes.fill()  # new objects of every process then go to pages of its own, not into shared ones
    gc.freeze()


def _become_zygote(keep_fd: int) -> None:
    """In the fresh fork of the supervisor: none of its signal handling, files or sockets (as a new
    process with close_fds would have), stdin from /dev/null."""
    set_process_name("fw-zygote")
    gc.freeze()  # what the supervisor allocated since its own freeze: not walked by the actors' collector
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, MAX_FD)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def serve(fd: int, sup_pid: int) -> None:
    """The zygote's loop (in its own process, forked after preload_here)."""
    conn = socket.socket(fileno=fd)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != sup_pid:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the supervisor's business
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
        """Wait for the exit, woken by it (a pidfd turns readable when the process ends), not by a timer:
        a stop waits as long as the actor takes to go, not up to the next tick."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.poll() is not None:
            return self.returncode  # type: ignore[return-value]
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # gone already (reaped by poll next), or a kernel without pidfd_open
            fd = -1
        try:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    import subprocess

                    raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
                if fd >= 0:
                    select.select([fd], [], [], left)
                else:
                    time.sleep(0.01 if left is None else min(0.01, left))
        finally:
            if fd >= 0:
                os.close(fd)
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

    def __init__(self, modules: tuple[str, ...] = (), preload: bool = True) -> None:
        """`modules`: the actors' modules (`actors.capture`, ...), imported once in the zygote.

        The supervisor imports them here (preload_here), then forks the zygote (before it starts any
        thread or socket), so the interpreter and every preloaded module are one set of pages for the
        supervisor, the zygote and every actor. `preload=False`: they are imported already (a zygote
        forked again later, see ForkServer)."""
        self._sock, theirs = socket.socketpair()
        sup_pid = os.getpid()
        if preload:
            preload_here(modules)
        pid = os.fork()
        if pid == 0:  # the zygote
            try:
                self._sock.close()
                _become_zygote(theirs.fileno())
                serve(theirs.fileno(), sup_pid)
            finally:
                os._exit(1)
        theirs.close()
        self.proc = ForkedProcess(pid)
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


class ForkServer:
    """Where the supervisor's actors come from: a zygote while actors start, no process while all run.

    The first zygote is forked right after preload_here, before the supervisor starts any thread. Once
    every actor has started, retire() ends it: it held the original of each page of the image that the
    supervisor and every actor had copied since (about 4 MB of a process that does nothing). An actor
    started later (a crash, a reload) gets a zygote forked from the supervisor at that moment, retired
    again once all run. That fork is of a process with threads (the event proxy, ZeroMQ's I/O thread
    and reaper); it is made safe by what the zygote does: it runs in the thread that forked (holding the
    GIL; CPython resets its own locks, glibc its malloc and stdio locks, loguru takes its handler locks
    around a fork), closes every inherited descriptor and never touches the parent's ZeroMQ context or
    sockets (each actor creates its own context); the other threads, inside libzmq's poll loops, hold
    none of the library's global locks that a new context takes.

    A zygote that fails (killed, an answer that is not one) is not forked again: `failed` is set and the
    supervisor starts actors as plain processes from then on."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules
        self.zygote: Zygote | None = Zygote(modules)
        self.failed = False

    @property
    def state(self) -> str:
        """For `floodwatch status`: running, retired (every actor runs) or failed."""
        return "failed" if self.failed else ("running" if self.zygote is not None else "retired")

    @property
    def pid(self) -> int | None:
        return self.zygote.proc.pid if self.zygote is not None else None

    def spawn(self, module: str, argv: list[str], env: dict[str, str]) -> ForkedProcess:
        """An actor forked from the zygote (forked again first if it was retired). OSError if the zygote
        failed (now or before): the caller starts a plain process instead."""
        if self.failed:
            raise OSError("the zygote failed before")
        try:
            if self.zygote is None:
                self.zygote = Zygote(self.modules, preload=False)
            return self.zygote.spawn(module, argv, env)
        except (OSError, ValueError) as e:
            self.failed = True
            self.close()
            raise OSError(str(e)) from e

    def retire(self) -> bool:
        """End the zygote (every actor runs); True if there was one."""
        if self.zygote is None:
            return False
        self.close()
        return True

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
