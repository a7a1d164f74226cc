"""The C allocator's large blocks kept for reuse: XLA's per-step buffers without page faults, on Linux.

A compiled JAX or TensorFlow-XLA step on CPU asks for one temporary buffer
per call, as large as the step's live intermediates (34 MB for
``Render("disk,box,triangle", 64, channels=3)``'s forward+backward at batch
64; more with an encoder). glibc's ``malloc`` serves blocks above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and gives them back to the
system on ``free``, and it trims the top of its heap above 128 KB free; so
every call the kernel maps the buffer's pages again and zeroes each on its
first touch: a minor page fault per 4 KB page, 8,200 a call for that step.
Measured (JAX-jit, this project's 2-core CPU, ``benchmarks/train_step.py``):
the Render step alone 14.4 -> 5.1 ms and the scene training step (encoder +
Render, batch 64) 49.6 -> 28.5 ms with the blocks kept; TensorFlow-XLA's
Render step (batch 32) 6.5 -> 5.1 ms (``benchmarks/render_cost.py``).

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks
from its heap (``M_MMAP_MAX = 0``) and never to trim it
(``M_TRIM_THRESHOLD = -1``), so a freed buffer is reused by the next step as
it is. The price: the process keeps the memory of its largest moment until it
exits (its resident size does not shrink after a peak). The command line
(:mod:`shapegrad.cli`) calls it at start; a library user opts in by calling
it (a library should not change a process's allocator on import). It leaves
the allocator alone where the user chose its settings (any of the
``MALLOC_*_`` variables glibc reads, or ``GLIBC_TUNABLES``): to run the
command line with glibc's defaults, set ``MALLOC_MMAP_MAX_=65536`` (the
default). Elsewhere (not Linux, or another C library) it does nothing.

Example:
    >>> import shapegrad
    >>> applied = shapegrad.keep_freed_memory()  # once, before a training loop on CPU
"""

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Environment variables through which a user sets glibc's malloc: their choice is kept.
_USER_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def _glibc():
    """The process's C library if it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: another allocator, other knobs
    return libc


def keep_freed_memory():
    """Keep large freed blocks in the C heap for reuse (glibc on Linux); returns whether it did.

    Process-wide and for the rest of the process (see the module docstring
    for what it costs and saves). Returns ``False``, changing nothing, when
    the C library is not glibc, or the user set glibc's malloc through the
    environment (``MALLOC_MMAP_MAX_`` and friends, ``GLIBC_TUNABLES``).
    Calling it again is harmless.
    """
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; the trim threshold is a size_t inside, so -1 is "never".
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
