"""Kernel-side random sampling: a classic BPF socket filter built on the random ancillary load.

    ld  #rand            ; A = prandom_u32()     (SKF_AD_OFF + SKF_AD_RANDOM)
    mod #N               ; A = A % N
    jne #0, drop
    ret #snaplen         ; keep the packet, at most snaplen bytes of it
  drop:
    ret #0

With N = 1 the filter is just `ret #snaplen`: the ring then holds only the first snaplen bytes of
each frame (tp_len keeps the wire length). Attaching again with SO_ATTACH_FILTER replaces the filter
atomically, so the rate changes at run time without reopening the socket.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from floodwatch.errors import CaptureError

SO_ATTACH_FILTER = 26
SKF_AD_OFF = -0x1000
SKF_AD_RANDOM = 56
# opcodes (linux/filter.h)
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def sampling_program(rate: int, snaplen: int) -> list[Insn]:
    """The filter keeping 1 in `rate` packets (cut to snaplen bytes)."""
    if rate < 1:
        raise ValueError(f"sample rate must be >= 1, not {rate}")
    if rate == 1:
        return [(BPF_RET_K, 0, 0, snaplen)]
    return [
        (BPF_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) & 0xFFFFFFFF),
        (BPF_ALU_MOD_K, 0, 0, rate),
        (BPF_JMP_JEQ_K, 0, 1, 0),
        (BPF_RET_K, 0, 0, snaplen),
        (BPF_RET_K, 0, 0, 0),
    ]


def attach(sock: socket.socket, program: list[Insn]) -> None:
    """SO_ATTACH_FILTER: install (or replace) the socket's classic BPF program."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    insns = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(insns))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as e:
        raise CaptureError(f"cannot attach the sampling filter: {e.strerror or e}") from e
