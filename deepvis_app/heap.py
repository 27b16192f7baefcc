"""How much freed memory glibc's arenas keep resident, bounded.

`devices.keep_freed_memory` has malloc reuse freed blocks instead of unmapping them (a fresh block is page-faulted
and zero-filled before use: 4x slower elementwise ops on activation-sized tensors). But a window session frees
blocks of many sizes from several threads (frames, occlusion batches, saliency, jobs), and what the arenas keep
grows until it covers every peak: measured with guided backprop, "Where it looks", the heat map and the
adversarial panel live, glibc's bytes in use stayed at 0.5-0.9 GB while the resident set swung up to 2.6 GB
between the worker's 30-second trims. `KeptMemory.check` (called by the live worker between frames, at most every
`CHECK_EVERY_S`) hands the free pages back (`malloc_trim`) once the resident memory beyond what is in use has
grown `LIMIT_BYTES` past its level after the last trim, so the window's memory follows what it uses.

glibc only (`mallinfo2`, 2.33+); elsewhere, or under `DEEPVIS_MALLOC=system`, `check` falls back to a trim every
`devices.TRIM_EVERY_S` seconds (a no-op where there is nothing to trim).
"""

from __future__ import annotations

import ctypes
import os
import time

from .devices import TRIM_EVERY_S, release_freed_memory

LIMIT_BYTES = 256 << 20  # resident free memory kept beyond the last trim's level: a few frames' working set
CHECK_EVERY_S = 1.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    """glibc's mallinfo2 function, or None (musl, macOS, glibc < 2.33)."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def accounting() -> dict[str, int]:
    """glibc's own account over all arenas, in bytes: in use (a leak grows this), free but kept (fragmentation or
    the kept heap grows this) and in mmapped blocks; empty without mallinfo2 (musl, macOS, glibc < 2.33)."""
    if _MALLINFO2 is None:
        return {}
    m = _MALLINFO2()
    return {"in_use": m.uordblks, "free": m.fordblks, "mmapped": m.hblkhd}


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not taken back, over all arenas (None without mallinfo2)."""
    book = accounting()
    return book["in_use"] + book["mmapped"] if book else None


def resident_private() -> int | None:
    """Resident bytes that are not file-backed or shared (the heaps, tensors, stacks), from /proc/self/statm."""
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class KeptMemory:
    """Trims the arenas when the resident memory beyond what is in use grew `limit` past its post-trim level."""

    def __init__(self, limit: int = LIMIT_BYTES, every: float = CHECK_EVERY_S) -> None:
        self.limit = limit
        self.every = every
        self.trims = 0
        self.floor: int | None = None  # resident - in use, right after the last trim
        self._checked = self._trimmed = time.monotonic()

    def excess(self) -> int | None:
        """Resident private bytes beyond malloc's bytes in use, or None where either cannot be read."""
        in_use, resident = heap_in_use(), resident_private()
        return None if in_use is None or resident is None else resident - in_use

    def check(self) -> bool:
        """Trim now if the kept memory grew past the limit (or, without the accounting, every TRIM_EVERY_S);
        True when a trim ran. Cheap when called more often than `every`."""
        now = time.monotonic()
        if now - self._checked < self.every:
            return False
        self._checked = now
        excess = self.excess()
        if excess is None:
            if now - self._trimmed < TRIM_EVERY_S:
                return False
            self._trimmed = now
            return self._trim()
        if self.floor is not None and excess - self.floor <= self.limit:
            return False
        trimmed = self._trim()
        self.floor = self.excess()  # the new level (also where nothing could be trimmed: no trim per check)
        return trimmed

    def _trim(self) -> bool:
        done = release_freed_memory()
        self.trims += done
        return done
