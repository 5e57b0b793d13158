"""The emulator process itself, set up before MiniStack starts a thread: two malloc arenas, and
what survives a full collection frozen (ecom_core.heap). Patches nothing of MiniStack's; no
upstream proposal (docs/emulator-notes.md, the rows on the hand-off's arenas and on full
collections)."""

from __future__ import annotations

import ctypes
import ctypes.util

from ecom_core import heap

# mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def two_malloc_arenas() -> bool:
    """glibc gives threads that allocate at the same time malloc arenas of their own (up to eight
    per core) and returns freed memory from them only at their top. MiniStack hands each Kinesis
    batch to the Lambda worker on a new thread, and the hand-off's multi-megabyte buffers left
    about 100 MB more resident in those arenas at 200,000 rows (emulator peak 828-848 MB against
    725-736 MB before the orjson hand-off; 741 MB with two arenas). The interpreter lock
    serialises the emulator's Python anyway, so two arenas cost it no parallelism. Set before
    MiniStack starts any thread; a no-op where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_ARENA_MAX, 2))
    except (OSError, AttributeError, TypeError):
        return False


def apply() -> None:
    two_malloc_arenas()
    # The emulator holds every item and record it stores as Python objects: without this, each
    # full collection walked all of them again (5-6 % of its CPU at 200,000 rows; ecom_core.heap).
    heap.freeze_survivors_of_full_collections()
