"""Kernels run straight through metalbench._core, judged by metalbench's own verdicts.

Used by benchmarks/cuda_decode.py, benchmarks/cuda_check.py and tests/test_cuda.py
to check the CUDA backend and its kernels without the runner: no store, no result
keys, and shapes that no suite holds. Inputs, references, the initial C and the
verdict are the package's (metalbench.reference, metalbench.metrics), so a pair
passes here exactly when the runner would call it ok.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from metalbench import _core, metrics, paths
from metalbench.reference import Inputs, Reference, ReferenceCache, make_inputs
from metalbench.runner import build_kernel, upload_inputs
from metalbench.specs import Spec, load_suite
from metalbench.variants import Variant

# Shapes no suite holds: every op, both layouts of each operand, batches, m > 1,
# tails that no vector width divides, float32.
CHECK_SPECS = [
    Spec("matmul", "float16", 1, 1, 896, 896, False, True),
    Spec("matmul_bias_add", "float16", 1, 1, 128, 896, False, True),
    Spec("matmul", "float16", 1, 1, 896, 4864, False, True),
    Spec("matmul", "float16", 1, 1, 4864, 896, False, True),
    Spec("matmul_alpha_beta", "float16", 14, 1, 160, 64, False, True, alpha=0.125),
    Spec("matmul", "float16", 14, 1, 64, 300, False, False),
    Spec("matmul_alpha_beta", "float16", 1, 1, 77, 200, False, True, alpha=0.5, beta=0.5),
    Spec("matmul", "float16", 1, 4, 96, 128, False, True),
    Spec("matmul", "float16", 2, 7, 64, 256, False, False),
    Spec("matmul", "float16", 1, 1, 64, 1000, True, True),
    Spec("matmul_bias_add", "float16", 3, 5, 40, 24, True, False),
    Spec("matmul", "float32", 1, 1, 256, 512, False, True),
    Spec("matmul_bias_add", "float32", 2, 1, 200, 128, False, False),
]


def open_cuda() -> _core.Device | None:
    """The first CUDA device, compiling into the package's kernel cache; None (said why) when there is none."""
    _core.set_cache_dir(str(paths.cache_dir() / "kernels"))
    reason = _core.unavailable_reason("cuda")
    if reason:
        print(f"CUDA is not available here: {reason}")
        return None
    return _core.open("cuda", 0)


@dataclass(frozen=True)
class Problem:
    spec: Spec
    inputs: Inputs
    ref: Reference
    c0: np.ndarray  # C before a checked launch (the never-written sentinel, or C's input when beta != 0)


def make_problem(spec: Spec, cache: ReferenceCache | None = None) -> Problem:
    """Seeded inputs and the cached float64 reference, as the runner makes them."""
    inputs = make_inputs(spec)
    ref, _ = (cache or ReferenceCache()).get(spec, inputs)
    return Problem(spec, inputs, ref, metrics.initial_c(spec, inputs))


def check(problem: Problem, out: np.ndarray) -> str | None:
    """None if `out` is correct, else the verdict's reason."""
    result = metrics.check(problem.spec, out, problem.ref, problem.c0)
    return None if result.verdict == "ok" else result.reason


class Buffers:
    """Device buffers of one problem; `reset()` restores C before each checked launch."""

    def __init__(self, dev: _core.Device, problem: Problem, workspace_floats: int = 1) -> None:
        self.dev, self.problem = dev, problem
        bufs = upload_inputs(dev, problem.spec, problem.inputs)
        self.a, self.b, self.bias, self.c = bufs["a"], bufs["b"], bufs["bias"], bufs["c"]
        self.ws = dev.allocate(4 * max(1, workspace_floats))
        self.ws.fill(0)
        self.reset()

    def reset(self) -> None:
        self.c.write(np.ascontiguousarray(self.problem.c0))

    def args(self) -> list:
        return [self.a, self.b, self.c, self.bias, self.ws, self.problem.spec.params()]

    def result(self) -> np.ndarray:
        out = np.empty_like(self.problem.c0)
        self.c.read(out)
        return out


def run_checked(dev: _core.Device, kernel: _core.Kernel, bufs: Buffers, groups: Sequence[int],
                threads: Sequence[int]) -> str | None:
    """One launch from a fresh C and workspace, then the verdict: None if correct, else why not."""
    bufs.reset()
    bufs.ws.fill(0)
    dev.run(kernel, bufs.args(), list(groups), list(threads))
    return check(bufs.problem, bufs.result())


def suite_specs(name: str) -> list[Spec]:
    """The specs of a suite (a built-in name or a path)."""
    return list(load_suite(name).specs)


def build_all(dev: _core.Device, pairs: Iterable[tuple[Variant, str]], threads: int = 8) -> dict:
    """Compiles (variant, dtype) pairs in parallel: {(id, dtype): Kernel or the exception}."""

    def build(item: tuple[Variant, str]) -> _core.Kernel:
        return build_kernel(dev, dev.info["backend"], *item)

    out: dict = {}
    unique = {(v.id, d): (v, d) for v, d in pairs}
    with cf.ThreadPoolExecutor(threads) as ex:
        futures = {ex.submit(build, item): key for key, item in unique.items()}
        for f in cf.as_completed(futures):
            try:
                out[futures[f]] = f.result()
            except Exception as e:  # noqa: BLE001 - belongs to that variant alone
                out[futures[f]] = e
    return out


def verify_all(dev: _core.Device, chosen: Sequence[Variant], shapes: Sequence[Spec],
               log: Callable[[str], None] = print, measure: bool = False) -> list[dict]:
    """Runs every variant on every shape it supports, twice (the second run catches a
    workspace left dirty), and with `measure` a few timed launches too; returns one row
    per pair, with "error" or "wrong" if it failed."""
    kernels = build_all(dev, [(v, s.dtype) for s in shapes for v in chosen if v.unsupported_reason(s) is None])
    rows = []
    for s in shapes:
        problem = make_problem(s)
        for v in chosen:
            if v.unsupported_reason(s) is not None:
                continue
            k = kernels[(v.id, s.dtype)]
            row = {"variant": v.id, "shape": s.label()}
            if isinstance(k, Exception):
                row["error"] = f"{type(k).__name__}: {k} {getattr(k, 'log', '')[:2000]}"
            else:
                groups, threads = v.geometry(s)
                try:
                    bufs = Buffers(dev, problem, v.workspace_floats(s))
                    why = run_checked(dev, k, bufs, groups, threads)
                    if not why:
                        bufs.reset()
                        dev.run(k, bufs.args(), list(groups), list(threads))
                        why = check(problem, bufs.result())
                    if why:
                        row["wrong"] = why
                    elif measure:
                        bufs.ws.fill(0)
                        dev.measure(k, bufs.args(), list(groups), list(threads), warmup=1, iterations=3,
                                    min_iterations=3, max_seconds=1.0)
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"
            if "error" in row or "wrong" in row:
                log(f"FAIL {row}")
            rows.append(row)
    return rows
