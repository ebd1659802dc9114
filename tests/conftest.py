import os

import pytest

from metalbench import _core


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
