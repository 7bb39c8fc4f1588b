"""Freed tensor memory kept for reuse while mindlens explains (Linux, glibc).

A CNN's forward pass on the CPU allocates each activation anew. glibc's ``malloc`` serves
blocks above its mmap threshold (at most 32 MiB, raised on the fly from 128 KiB) with
fresh ``mmap`` pages and gives them back to the kernel on ``free``; memory freed at the
top of its heap beyond the trim threshold goes back too. Either way the next pass writes
to new pages, and every 4 KiB page costs a page fault and the kernel zeroing it. On
mobilenet_v2 (224 px, 2 threads) that is more than half of a forward pass: 23 ms per image
at batch size 8, 10 ms with the memory kept (measured on the 2-core development machine).
That is why PyTorch's CPU tuning guides preload jemalloc or tcmalloc.

:func:`reusing_memory` raises both thresholds (``mallopt``, documented in ``man 3
mallopt``) while at least one explanation runs in the process and :data:`GRACE_S` (1 s)
after the last one ends, so blocks freed by one pass are reused by the next, also by the
next call of a loop. Then it hands the memory back (``malloc_trim``) and sets the
thresholds to 32 MiB and 64 MiB, the largest values glibc's own dynamic thresholds can
reach (mallopt turns the dynamic adjustment off for good): blocks up to 32 MiB stay in the
heap and up to 64 MiB of free heap is kept rather than trimmed. In our measurements that
is as fast as glibc's defaults or faster (a batch-1 forward of mobilenet_v2: 16 ms after,
23 ms before), and it may keep up to 64 MiB more memory. Peer libraries timed in the same
process after mindlens profit from it too (the side-by-side benchmarks are conservative
for mindlens). The explanations are bit for bit the same; only where the memory comes
from changes.

It does nothing where it cannot help or where the user decided: on other C libraries and
systems (``mallopt`` absent), when glibc's malloc is tuned by the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES`` with ``malloc``)
or ``MINDLENS_REUSE_MEMORY=0`` is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters, <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: while explaining: blocks up to 2 GiB come from (and return to) the heap, nothing is trimmed
_HELD = (1 << 31) - 1, (1 << 31) - 1
#: after: the largest thresholds glibc's dynamic adjustment can reach on 64-bit systems
#: (DEFAULT_MMAP_THRESHOLD_MAX, twice that for trimming)
_AFTER = 32 << 20, 64 << 20

#: seconds the memory stays kept after the last explanation ends: calls in a loop (a scan,
#: an evaluation, a busy server) find it again; an idle process gets it back soon after
GRACE_S = 1.0

_lock = threading.Lock()
_depth = 0  # explanations running now, all threads
_held = False  # whether the thresholds are raised
_timer: threading.Timer | None = None  # gives the memory back after GRACE_S idle


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: a fresh lock (the parent's may have
    been held by another thread at the fork), no explanation running, no timer. The child
    inherits the thresholds; its next explanation's end starts its own timer."""
    global _lock, _depth, _timer
    _lock, _depth, _timer = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or os.environ.get("MINDLENS_REUSE_MEMORY") == "0":
        return None
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) \
            or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
_MALLOPT = None if _LIBC is None else _LIBC.mallopt
_TRIM = None if _LIBC is None else _LIBC.malloc_trim


def active() -> bool:
    """Whether an explanation keeps freed memory for reuse now (inside
    :func:`reusing_memory`)."""
    return _MALLOPT is not None and _depth > 0


def held() -> bool:
    """Whether freed memory is kept now: during an explanation and up to
    :data:`GRACE_S` seconds after the last one."""
    return _held


def available() -> bool:
    """Whether :func:`reusing_memory` can act in this process."""
    return _MALLOPT is not None


def _set(mmap_threshold: int, trim_threshold: int) -> None:
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, mmap_threshold)
        _MALLOPT(_M_TRIM_THRESHOLD, trim_threshold)


def _give_back() -> None:
    """Thresholds to glibc's dynamic maxima and the kept memory back to the system (under
    the lock, no explanation running)."""
    global _held, _timer
    _set(*_AFTER)
    if _TRIM is not None:
        _TRIM(0)
    _held, _timer = False, None


def give_back() -> None:
    """Give the kept memory back now rather than :data:`GRACE_S` after the last
    explanation (no effect while one runs): for a process that turns to other work at
    once, e.g. a benchmark that times another library next, which must not run on
    mindlens's kept memory."""
    global _timer
    with _lock:
        if _depth == 0 and _held:
            if _timer is not None:
                _timer.cancel()
            _give_back()


def _when_idle() -> None:
    with _lock:  # a call may have begun meanwhile, or a later timer taken over
        if _depth == 0 and _held and _timer is threading.current_thread():
            _give_back()


@contextmanager
def reusing_memory() -> Iterator[None]:
    """Keep freed memory for reuse in this block (nested and from several threads: held
    until the last one leaves, and :data:`GRACE_S` seconds more)."""
    global _depth, _held, _timer
    if _MALLOPT is None:
        yield
        return
    with _lock:
        _depth += 1
        if _timer is not None:
            _timer.cancel()
            _timer = None
        if not _held:
            _set(*_HELD)
            _held = True
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _held:
                if GRACE_S <= 0:
                    _give_back()
                else:
                    _timer = threading.Timer(GRACE_S, _when_idle)
                    _timer.daemon = True  # never holds up the interpreter's exit
                    _timer.start()
