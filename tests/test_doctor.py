"""`metalbench doctor` on whatever this machine has; in CI, PoCL's OpenCL device."""

from __future__ import annotations

import subprocess
import sys

from metalbench import _core, doctor


def test_every_backend_is_reported_with_a_reason_when_it_cannot_run():
    reports = doctor.diagnose()
    assert [r.name for r in reports] == ["metal", "cuda", "opencl"]
    for r in reports:
        assert r.built == (r.name in _core.backends())
        assert r.available == (r.built and not r.reason)
        assert r.available or r.reason  # never unavailable without saying why
        assert r.available or not r.devices


def test_doctor_describes_the_opencl_device(opencl):
    report = next(r for r in doctor.diagnose() if r.name == "opencl")
    assert report.available and report.devices
    d = report.devices[0]
    info = opencl.info
    assert d.opened and d.name == info["name"] and d.cache_bytes == info["cache_bytes"]
    assert "CL_DEVICE_GLOBAL_MEM_CACHE_SIZE" in d.cache_source
    assert "profiling events" in d.timing_source and d.clock_source


def test_metalbench_doctor_runs_and_names_the_device_and_its_cache(opencl):
    r = subprocess.run([sys.executable, "-m", "metalbench", "doctor"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = opencl.info
    assert info["name"] in r.stdout
    assert f"{info['cache_bytes']} bytes" in r.stdout and doctor.size(info["cache_bytes"]) in r.stdout
    assert "GPU timestamps" in r.stdout and "OpenCL profiling events" in r.stdout
    assert "peak bandwidth" in r.stdout and "unknown" in r.stdout  # OpenCL gives none
    assert "metal: " in r.stdout  # every backend is accounted for, built or not


def test_doctor_shows_the_cache_a_run_measured_and_where_it_came_from(opencl, tmp_path, monkeypatch):
    from metalbench import paths, roofline
    from metalbench.store import Store

    info = opencl.info
    store = Store(paths.default_store())
    store.put_cache(roofline.device_key(info), 8 << 20, "measured: test curve", [(1 << 20, 3e10), (1 << 29, 1e10)])
    store.close()
    d = next(r for r in doctor.diagnose(paths.default_store()) if r.name == "opencl").devices[0]
    assert d.cache_bytes == 8 << 20 and d.cache_source.startswith("measured: test curve")
    assert d.driver_cache_bytes == info["cache_bytes"]
    r = subprocess.run([sys.executable, "-m", "metalbench", "doctor"], capture_output=True, text=True, timeout=120)
    assert "8.0 MiB (8388608 bytes), measured: test curve" in r.stdout, r.stdout


def test_every_device_of_a_backend_shows_what_the_store_keeps_for_it(opencl, monkeypatch):
    # Two devices of one model (PoCL's, listed twice): each shows the stored cache and
    # peak, and says when an earlier version of the probe measured them.
    from metalbench import paths, roofline
    from metalbench.peak import method
    from metalbench.store import Store

    listed = _core.devices
    monkeypatch.setattr(_core, "devices", lambda name: listed(name) * 2 if name == "opencl" else listed(name))
    key = roofline.device_key(opencl.info)
    store = Store(paths.default_store())
    store.put_cache(key, 8 << 20, "measured: test curve", [(1 << 20, 3e10)], method=method())
    store.put_peak(key, 2.5e10, "measured: test", method="earlier")
    store.close()
    devices = next(r for r in doctor.diagnose(paths.default_store()) if r.name == "opencl").devices
    assert len(devices) == 2
    for d in devices:
        assert d.cache_bytes == 8 << 20 and "earlier" not in d.cache_source
        assert d.peak_bandwidth == 2.5e10 and "an earlier version of the probe measured it" in d.peak_bandwidth_source
