"""Stop one thread of another process, not the whole process (ptrace stops a thread; SIGSTOP stops all).

What a stage's main thread does when it stalls (a first CUDA call, a long collection, a swapped-out page)
while its ZeroMQ I/O threads go on receiving: a test stops the main thread (tid == pid) with this.

The tracer is a helper process of its own, not the test's: a stage is a child of the test's process
(its supervisor runs there), and a ptrace stop is reported to the tracer's process by ``waitpid``. Traced
from the test's process, the supervisor's own reaping of its children could take that report first, and
Python's ``Popen`` reads a stopped child as one killed by the stop's signal (SIGTRAP): the supervisor then
"restarted" a stage that was only paused."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

_TRACER = r"""
import ctypes, os, sys
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT, WALL = 17, 0x4206, 0x4207, 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
tid = int(sys.argv[1])
def ptrace(request):
    if libc.ptrace(request, tid, None, None) == -1:
        err = ctypes.get_errno()
        sys.exit(f"ptrace({request:#x}, {tid}): {os.strerror(err)}")
ptrace(PTRACE_SEIZE)
ptrace(PTRACE_INTERRUPT)
os.waitpid(tid, WALL)
print("stopped", flush=True)
sys.stdin.readline()
ptrace(PTRACE_DETACH)
"""


@contextmanager
def thread_stopped(tid: int):
    """Thread ``tid`` (of a process this machine lets us trace) is stopped inside the block, and runs on after it."""
    tracer = subprocess.Popen([sys.executable, "-c", _TRACER, str(tid)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if tracer.stdout.readline().strip() != "stopped":
            tracer.wait(timeout=10)
            raise OSError(f"could not stop thread {tid}: {tracer.stderr.read().strip()}")
        yield
    finally:
        if tracer.poll() is None:
            tracer.stdin.write("go\n")
            tracer.stdin.close()
            tracer.wait(timeout=10)
        if tracer.returncode:
            raise OSError(f"thread {tid} may still be stopped: its tracer exited {tracer.returncode}: "
                          f"{tracer.stderr.read().strip()}")
