"""The event proxy: the XSUB/XPUB every actor's PUB and SUB connect to, in a thread of the supervisor."""

from __future__ import annotations

import threading

import zmq

from floodwatch import bus


class EventProxy:
    def __init__(self, ctx: zmq.Context, ep: bus.Endpoints, hwm: int) -> None:
        self._ctx = ctx
        self._ep = ep
        self._hwm = hwm
        self._thread: threading.Thread | None = None
        self._ctl_endpoint = f"inproc://proxy-ctl-{id(self)}"
        self._ctl: zmq.Socket | None = None

    def start(self) -> None:
        xsub, xpub = bus.proxy_ends(self._ctx, self._ep, self._hwm)
        ctl_recv = bus.pair(self._ctx, self._ctl_endpoint, bind=True)
        self._ctl = bus.pair(self._ctx, self._ctl_endpoint, bind=False)

        def run() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, ctl_recv)
            except zmq.ZMQError:
                pass
            finally:
                for s in (xsub, xpub, ctl_recv):
                    s.close(0)

        self._thread = threading.Thread(target=run, name="event-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._ctl is not None and self._thread is not None:
            self._ctl.send(b"TERMINATE")
            self._thread.join(timeout=2)
            self._ctl.close(0)
            self._ctl = None
