"""What the tests share: fixtures for the state every test gets (its own cache and store,
the OpenCL device), and plain helpers, imported as `from conftest import ...`, for what
tests do again and again: sweep through the runner, run the CLI, write a family. The
helpers are functions rather than fixtures because module-scoped fixtures sweep too;
start_cli is a fixture, as what it starts must be stopped when the test ends."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

# No test writes into the user's own folders: metalbench's cache and store (per test,
# below), and the caches and settings of what it drives (PoCL's kernel cache,
# matplotlib's font cache, Ray's) go to one folder per session, set here, before
# anything is imported that reads them, and inherited by every process a test starts.
# tests/test_home.py runs tests with HOME empty and checks that it stays so.
_SESSION = Path(tempfile.mkdtemp(prefix="metalbench-tests-"))
for _name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
    os.environ[_name] = str(_SESSION / _name.lower())
os.environ["POCL_CACHE_DIR"] = str(_SESSION / "pocl")
os.environ["MPLCONFIGDIR"] = str(_SESSION / "matplotlib")
atexit.register(shutil.rmtree, _SESSION, ignore_errors=True)

from metalbench import _core, report, runner, variants  # noqa: E402 - after the folders above are set
from metalbench.results import Result, Run  # noqa: E402
from metalbench.settings import Settings  # noqa: E402
from metalbench.specs import Spec, load_suite  # noqa: E402
from metalbench.store import Store  # noqa: E402

# The planted faults (faults/README.md): a folder of manifests for --kernels, and the
# suite they run on.
FAULTS = Path(__file__).resolve().parent / "faults"
FAULT_KERNELS = FAULTS / "kernels"
FAULT_SUITE = FAULTS / "suite.toml"

# The cheapest measurement that still verifies: every pair is checked before and after
# its timed launches, which are few. For tests about verdicts, not times.
FAST = Settings(warmup=1, min_samples=2, max_samples=3, max_time=0.05)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path, monkeypatch):
    """Every test gets its own reference cache and result store."""
    monkeypatch.setenv("METALBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("METALBENCH_DB", str(tmp_path / "results.sqlite"))
    return tmp_path


def _opencl_reason() -> str:
    return _core.unavailable_reason("opencl") if "opencl" in _core.backends() else "not built"


@pytest.fixture(scope="session")
def opencl():
    """The first OpenCL device. CI sets METALBENCH_REQUIRE_OPENCL so a missing driver fails there."""
    reason = _opencl_reason()
    if reason:
        if os.environ.get("METALBENCH_REQUIRE_OPENCL"):
            pytest.fail(f"OpenCL is required here but unavailable: {reason}")
        pytest.skip(f"no OpenCL device: {reason}")
    return _core.open("opencl", 0)


def sweep(folder: Path, patterns: Sequence[str] = (), *, suite: str | Path = "smoke", kernels: Sequence[Path] = (),
          backend: str = "opencl", settings: Settings = FAST, **options: object) -> tuple[Run, report.Report]:
    """runner.run of the `backend` variants matching `patterns` (every one when none), built in
    or from the `kernels` folders, with the backend's baseline, over `suite` (a built-in name,
    a path, or the text of a suite file), into the store folder/results.sqlite: the stored
    run and its report. `options` go to runner.run as they are (force, race, timeout, ...)."""
    if isinstance(suite, str) and "\n" in suite:
        path = folder / "suite.toml"
        path.write_text(suite)
        suite = path
    store = Store(folder / "results.sqlite")
    loaded = load_suite(suite)
    chosen = runner.with_baseline(variants.load_variants(backend, kernels), backend, patterns, specs=loaded.specs)
    run = store.load_run(runner.run(loaded, chosen, backend=backend, store=store, settings=settings,
                                    **options))
    return run, report.build(run)


class Recorder(runner.Events):
    """Keeps what the runner reports (the total, each result, each note); with `stop_after`,
    interrupts the sweep as Ctrl-C would once that many results are in."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.total: int | None = None
        self.stop_after = stop_after

    def start(self, total: int) -> None:
        self.total = total

    def result(self, spec: Spec, result: Result) -> None:
        self.results.append(result)
        if self.stop_after is not None and len(self.results) >= self.stop_after:
            raise KeyboardInterrupt

    def note(self, message: str) -> None:
        self.notes.append(message)


def results_of(run: Run, variant: str) -> list[Result]:
    """The results of `variant` in `run` on the specs it supports, in the suite's order."""
    return [r for r in run.results if r.variant == variant and r.status != "unsupported"]


def _cli_command(args: Sequence[str], before: str) -> list[str]:
    if not before:
        return [sys.executable, "-m", "metalbench", *args]
    # `before` runs first, in the CLI's own process; then the module runs as -m runs it.
    program = f"{before}\nimport runpy\nrunpy.run_module('metalbench', run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", program, *args]


def cli(*args: str, env: dict[str, str] | None = None, before: str = "", cwd: Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m metalbench ARGS` as a user runs it, in a process of its own, to its end.
    `env` adds to the environment; `before` is Python that runs first in that process (to
    hide a module, say)."""
    return subprocess.run(_cli_command(args, before), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture
def start_cli():
    """start_cli(*ARGS) starts `python -m metalbench ARGS` and leaves it running, for the test
    to signal or kill. Whatever still runs when the test ends (a test that failed, or ran
    out of time) is killed: its workers end with it."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        started.append(subprocess.Popen(_cli_command(args, ""), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def suite_in_bfloat16(name: str) -> str:
    """The text of the built-in suite `name` with every spec's dtype bfloat16 (its own file
    holds float16 and float32)."""
    text = (Path(variants.__file__).parent / "suites" / f"{name}.toml").read_text()
    text, count = re.subn(r'^dtype = "float(16|32)"', 'dtype = "bfloat16"', text, flags=re.M)
    assert count > 0, f"the {name} suite names no dtype to change"
    return text


def write_family(folder: Path, name: str, source: str, *, extra: str = "", tgs: tuple[int, ...] = (64,)) -> Path:
    """An OpenCL family of one variant per TG in `tgs` (`name`/tg64, one thread per output
    column) for the kernel `name` in `source`, written into `folder`, which is returned
    for --kernels; `extra` is more of the manifest (before its [grid])."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.c").write_text(textwrap.dedent(source))
    (folder / f"{name}.toml").write_text(textwrap.dedent(f"""\
        name = "{name}"
        source = "{name}.c"
        entry = "{name}"
        backends = ["opencl"]
        dtypes = ["float16", "float32"]
        config = "tg{{TG}}"
        {extra}
        [grid]
        TG = {list(tgs)}
        [dispatch]
        groups = ["ceil_div(n, TG)", "m", "batch"]
        threads = ["TG", 1, 1]
        """))
    return folder


class TamperedDevice:
    """A worker's device whose `measure()` is followed by `tamper(timing)`: what a kernel that
    misbehaves only in its timed launches leaves in the buffers, simulated on the host
    (`buffers` are the spec's arena.SpecBuffers). Everything else is the real device."""

    def __init__(self, device, buffers):
        self._device, self._buffers = device, buffers

    def __getattr__(self, name):
        return getattr(self._device, name)

    def measure(self, *args, **kwargs):
        timing = self._device.measure(*args, **kwargs)
        self.tamper(timing)
        return timing

    def tamper(self, timing: dict) -> None:
        raise NotImplementedError


def patched(spec: Spec, **fields: float) -> bytes:
    """The spec's params (Spec.params, the one packer of MBParams) with some fields changed,
    at the offsets the compiled core reports."""
    raw = bytearray(spec.params())
    layout = _core.abi()["params"]["fields"]
    for name, value in fields.items():
        struct.pack_into("<" + layout[name]["format"], raw, layout[name]["offset"], value)
    return bytes(raw)
