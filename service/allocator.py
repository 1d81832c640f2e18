"""glibc malloc tuning for a long-running server: resident memory that follows what is live.

PyTorch's CPU tensors come straight from malloc. glibc serves a block above its mmap threshold
with mmap and unmaps it on free, but every time such a block is freed it raises the threshold to
that block's size (up to 32 MiB), so after the first few batches nearly every activation tensor
is carved from the heap arenas instead. Batches of ever-different (rows, length) shapes then leave
freed holes that the next shapes do not fit; glibc keeps them, and resident memory grows with the
variety of the inputs while what is live stays flat (benchmarks/RESULTS.md, "Soak: 15 minutes of
distinct texts"). Fixing the threshold turns the raising off: big blocks are mapped and unmapped
each time, and the arenas only hold small, reusable ones.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger("rmserve")

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# Allocators that replace glibc's malloc when preloaded: their own tuning applies, not this one.
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` for this process, from now on. True if
    set; False (and nothing changed) for 0, off glibc, under a preloaded allocator, or where the
    operator set MALLOC_MMAP_THRESHOLD_ (glibc read it at start; theirs wins)."""
    if threshold_bytes <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols, glibc's mallopt among them
    if not libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes):  # refused: over glibc's 32 MiB cap
        logger.warning("glibc refused an mmap threshold of %d bytes", threshold_bytes)
        return False
    return True
