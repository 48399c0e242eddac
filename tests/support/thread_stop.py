"""Stop one thread of another process, not the whole process (ptrace stops a thread; SIGSTOP stops all).

What a stage's main thread does when it stalls (a first CUDA call, a long collection, a swapped-out page)
while its ZeroMQ I/O threads go on receiving: a test stops the main thread (tid == pid) with this."""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000  # __WALL: wait for a thread (clone child) too

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def _ptrace(request: int, tid: int) -> None:
    if _libc.ptrace(request, tid, None, None) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


@contextmanager
def thread_stopped(tid: int):
    """Thread ``tid`` (of any process this one may trace) is stopped inside the block, and runs on after it."""
    _ptrace(PTRACE_SEIZE, tid)
    try:
        _ptrace(PTRACE_INTERRUPT, tid)
        os.waitpid(tid, WALL)
        yield
    finally:
        _ptrace(PTRACE_DETACH, tid)
