import atexit
import os
import shutil
import tempfile
import textwrap
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

from metalbench import _core  # noqa: E402 - after the folders above are set


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


def write_family(folder: Path, name: str, source: str, *, backend: str = "opencl", extra: str = "",
                 suffix: str = ".c") -> Path:
    """A family of one variant (`name`/tg64, one thread per output column) for the kernel
    `name` in `source`, written into `folder`, which is returned for --kernels."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}{suffix}").write_text(textwrap.dedent(source))
    (folder / f"{name}.toml").write_text(textwrap.dedent(f"""\
        name = "{name}"
        source = "{name}{suffix}"
        entry = "{name}"
        backends = ["{backend}"]
        dtypes = ["float16", "float32"]
        config = "tg{{TG}}"
        {extra}
        [grid]
        TG = [64]
        [dispatch]
        groups = ["ceil_div(n, TG)", "m", "batch"]
        threads = ["TG", 1, 1]
        """))
    return folder
