"""chunks.chunked: every element once, results in order, side by side where there are cores."""

import os
import select
import signal
import sys
import threading
import warnings

import numpy as np
import pytest

from metalbench import chunks


def test_every_chunk_once_in_order_the_last_shorter():
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def span(s: int, e: int) -> tuple[int, int]:
        with lock:
            seen.append((s, e))
        return s, e

    assert chunks.chunked(span, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert sorted(seen) == [(0, 4), (4, 8), (8, 10)]
    assert chunks.chunked(span, 0, 4) == []


def test_passes_fill_their_own_chunk_of_one_array():
    out = np.zeros(1000)
    chunks.chunked(lambda s, e: out.__setitem__(slice(s, e), np.arange(s, e)), out.size, 7)
    assert (out == np.arange(1000)).all()


def test_chunks_run_on_the_pool_where_there_are_cores(monkeypatch):
    monkeypatch.setattr(chunks, "THREADS", 2)
    names = chunks.chunked(lambda s, e: threading.current_thread().name, 8, 2)
    assert all(name.startswith("metalbench-chunk") for name in names)
    monkeypatch.setattr(chunks, "THREADS", 1)
    assert chunks.chunked(lambda s, e: threading.current_thread().name, 8, 2) == [threading.current_thread().name] * 4


@pytest.mark.skipif(sys.platform != "linux", reason="forking a process with threads is for Linux's fork start method")
def test_a_forked_child_makes_its_own_threads():
    chunks.chunked(lambda s, e: s, 8, 2)  # the parent's pool exists
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns of forking with threads: what this test does
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its inherited pool has no threads, and waiting on it would hang
        os.close(read)
        os.write(write, str(sum(chunks.chunked(lambda s, e: e - s, 8, 2))).encode())
        os._exit(0)
    os.close(write)
    answered = select.select([read], [], [], 30)[0]
    if not answered:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answered and os.read(read, 16) == b"8"
