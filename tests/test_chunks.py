"""chunks.chunked: every element once, results in order, side by side where there are cores."""

import threading

import numpy as np

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
