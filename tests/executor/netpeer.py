"""Tiny network peers for the kernel-backed safety test, run inside a namespace with `ip netns exec`.

  serve tcp:ADDR:PORT udp:ADDR:PORT ...   echo servers; prints "ready" once every socket is bound
  hold SRC DST PORT                       one TCP connection kept open; each stdin line is sent and its
                                          echo printed ("lost" when the connection no longer answers)
  check tcp:SRC:DST:PORT udp:SRC:DST:PORT ...  one try each (2 s); prints a JSON list of booleans
"""

from __future__ import annotations

import json
import selectors
import socket
import sys

TIMEOUT = 2.0


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _parts(spec: str) -> list[str]:
    """'tcp:1.2.3.4:80' or 'tcp:[fd00::1]:80' (IPv6 in brackets) -> ['tcp', '1.2.3.4', '80']."""
    proto, rest = spec.split(":", 1)
    return [proto, *(rest.replace("[", "").split("]:") if "[" in rest else rest.split(":"))]


def serve(specs: list[str]) -> None:
    sel = selectors.DefaultSelector()
    for spec in specs:
        proto, addr, port = _parts(spec)
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(_family(addr), kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, int(port)))
        if proto == "tcp":
            sock.listen(64)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, proto)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            ready = key.fileobj
            if not isinstance(ready, socket.socket):
                continue
            _serve_one(sel, ready, key.data)


def _serve_one(sel: selectors.BaseSelector, sock: socket.socket, kind: str) -> None:
    """Accept a connection, echo a datagram, or echo what a connection sent (closing it at its end)."""
    if kind == "tcp":
        conn, _ = sock.accept()
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, "conn")
    elif kind == "udp":
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)
    else:
        try:
            data = sock.recv(2048)
        except OSError:
            data = b""
        if data:
            sock.sendall(data)
        else:
            sel.unregister(sock)
            sock.close()




def _tcp(src: str, dst: str, port: int) -> bool:
    try:
        with socket.create_connection((dst, port), TIMEOUT, source_address=(src, 0)) as s:
            s.sendall(b"ping\n")
            return s.recv(16) == b"ping\n"
    except OSError:
        return False


def _udp(src: str, dst: str, port: int) -> bool:
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.bind((src, 0))
            s.sendto(b"query", (dst, port))
            return s.recvfrom(64)[0] == b"query"
        except OSError:
            return False


def check(specs: list[str]) -> None:
    out = []
    for spec in specs:
        proto, src, dst, port = _parts(spec)  # tcp:SRC:DST:PORT, IPv6 in brackets: tcp:[fd00::2]:[fd00::1]:80
        out.append(_tcp(src, dst, int(port)) if proto == "tcp" else _udp(src, dst, int(port)))
    print(json.dumps(out), flush=True)


def hold(src: str, dst: str, port: int) -> None:
    s = socket.create_connection((dst, port), TIMEOUT, source_address=(src, 0))
    print("ready", flush=True)
    for line in sys.stdin:
        s.settimeout(TIMEOUT)
        try:
            s.sendall(line.encode())
            answer = s.recv(2048).decode()
        except OSError:
            answer = ""
        print(answer.strip() or "lost", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "serve":
        serve(args)
    elif mode == "check":
        check(args)
    else:
        hold(args[0], args[1], int(args[2]))
