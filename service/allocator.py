"""glibc malloc tuning for a long-running server: resident memory that follows what is live.

PyTorch's CPU tensors come straight from malloc. glibc serves a block above its mmap threshold
with mmap and unmaps it on free, but every time such a block is freed it raises the threshold to
that block's size (up to 32 MiB), so after the first few batches nearly every activation tensor
is carved from the heap arenas instead. Batches of ever-different (rows, length) shapes then leave
freed holes that the next shapes do not fit; glibc keeps them, and resident memory grows with the
variety of the inputs while what is live stays flat (benchmarks/RESULTS.md, "Soak: 15 minutes of
distinct texts").

Two remedies. `HeapTrimmer` (the default) leaves glibc's threshold alone, so the forward reuses
arena memory without page faults, and calls malloc_trim once resident memory has grown a slack
past where the last trim left it: the holes' pages go back to the OS, a few milliseconds per
trim, paid only as fast as memory would otherwise grow. `fix_mmap_threshold` instead maps and
unmaps every big block, which keeps memory flatter but faults in every activation tensor's pages
on every layer: a quarter of the CPU throughput (RESULTS.md, "Trainer-scale requests").
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

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


T = TypeVar("T")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident memory (VmRSS), or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return None


class HeapTrimmer:
    """Gives freed heap pages back to the OS (malloc_trim) whenever resident memory has grown
    `slack_bytes` past where the last trim left it. Checked after every forward pass: one read
    of /proc; a trim walks the arenas (milliseconds) and its pages fault in again only if reused.
    A floor that rises with live memory (a cache filling) is followed, not trimmed at each pass.
    """

    def __init__(self, slack_bytes: int) -> None:
        self._slack = slack_bytes
        self._libc = ctypes.CDLL(None)
        self._lock = threading.Lock()  # forward workers may finish together: one trims
        self._floor = resident_bytes() or 0
        self.trims = 0

    @classmethod
    def for_this_process(cls, slack_bytes: int) -> HeapTrimmer | None:
        """A trimmer, or None where there is nothing to trim this way: slack 0, no /proc, a libc
        other than glibc, or a preloaded allocator (its own tuning applies)."""
        if slack_bytes <= 0 or resident_bytes() is None or platform.libc_ver()[0] != "glibc":
            return None
        if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
            return None
        return cls(slack_bytes)

    def after_forward(self) -> None:
        resident = resident_bytes()
        if resident is None:
            return
        self._floor = min(self._floor, resident)  # memory given back by itself lowers the bar too
        if resident <= self._floor + self._slack or not self._lock.acquire(False):
            return
        try:
            self._libc.malloc_trim(0)
            self.trims += 1
            self._floor = resident_bytes() or resident
        finally:
            self._lock.release()

    def wrap(self, score: Callable[[Sequence[T]], list[float]]) -> Callable[[Sequence[T]], list[float]]:
        """`score`, then a trim if memory has grown: what the batcher calls for each batch."""

        def score_then_trim(rows: Sequence[T]) -> list[float]:
            try:
                return score(rows)
            finally:
                self.after_forward()

        return score_then_trim
