"""Long numpy passes over large outputs, split into chunks that run side by side.

Checking a prefill output (millions of elements) after every verified launch, and its
reference for each copy of A in cold mode, were most of a prefill sweep's time on one
core. numpy lets go of the GIL inside its loops, so threads share the work; chunks also
bound the float64 temporaries each pass makes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["THREADS", "chunked"]

# The cores, up to 8: the passes are memory-bound, and eight threads of a dozen float64
# temporaries a chunk stay within a few hundred MiB for the chunks the callers use.
THREADS = max(1, min(8, os.cpu_count() or 1))

T = TypeVar("T")
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        # A forked child inherits the pool but not its threads: it makes its own.
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="metalbench-chunk"))
        return _pool[1]


def chunked(pass_over: Callable[[int, int], T], size: int, chunk: int) -> list[T]:
    """pass_over(start, stop) for each chunk of [0, size), `chunk` long (the last shorter), in
    order; side by side when there are several. Passes must write only their own chunk."""
    spans = [(s, min(s + chunk, size)) for s in range(0, size, chunk)]
    if len(spans) <= 1 or THREADS == 1:
        return [pass_over(s, e) for s, e in spans]
    return list(_threads().map(lambda span: pass_over(*span), spans))
