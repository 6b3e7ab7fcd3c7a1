"""Process-wide memory settings for the long-running daemon, applied once before it starts.

Measured at a steady 5,000 trades/s (bench/throughput.py), two allocators held on to memory
the collector had finished with:

- pyarrow's own memory pool (mimalloc or jemalloc) keeps freed pages for reuse. Each Parquet
  encode is a few hundred kilobytes, briefly; the system allocator gives them back.
- glibc gives each thread that allocates its own malloc arena (up to 8 per core), and the
  encode, spool and upload worker threads each grew one. Two arenas are plenty here.

Together about 15 MB of resident memory. Both are no-ops where they do not apply.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

__all__ = ["apply"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
_ARENAS = 2


def apply() -> None:
    """Call first thing in the daemon's process, before pyarrow is imported."""
    if "MALLOC_ARENA_MAX" not in os.environ:  # an operator's own setting wins
        name = ctypes.util.find_library("c")
        if name and "libc.so" in name:
            with contextlib.suppress(OSError, AttributeError):  # not glibc after all
                ctypes.CDLL(name).mallopt(_M_ARENA_MAX, _ARENAS)
    # Read by Arrow's C++ library when it first allocates (the Parquet writer uses that pool,
    # not the one pyarrow.set_memory_pool sets): call this before pyarrow is imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
