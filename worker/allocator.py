"""Give freed record buffers back to the operating system (glibc only).

A 1 MiB record is a 1 MiB `bytes` object, which Python takes from malloc. glibc serves blocks that
large with mmap at first, but each time such a block is freed it raises its mmap threshold to that
size (up to 32 MiB), so from then on every record buffer comes from the heap instead. Freed heap
blocks between live ones stay in the process: under a flood of large records RSS keeps climbing
towards the worst case of the byte budget even though what is live stays small
(docs/reliability.md, Memory under a flood).

A fixed threshold turns the adjustment off: blocks of 256 KiB and more are mapped on their own and
returned on free. Small objects, almost all of Python's, are unaffected; a large record costs one
mmap and munmap, nothing next to labelling it. MALLOC_MMAP_THRESHOLD_ set in the environment wins
(glibc reads it itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
THRESHOLD_BYTES = 256 * 1024


def return_large_blocks(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold`; False where that cannot be done (not glibc, or the
    environment sets it)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold) == 1)
    if not done:
        logger.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return done
