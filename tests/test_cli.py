"""`metalbench` as a user runs it: a real process, real output, real exit codes."""

import json
import os
import shutil
import subprocess
import sys


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "metalbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_run_report_and_rerun(opencl, tmp_path):
    out = tmp_path / "report.json"
    args = ["run", "--suite", "smoke", "--backend", "opencl", "--variants", "gemv/*", "--iterations", "3",
            "--max-seconds", "0.05"]
    first = cli(*args, "--json", str(out))
    assert first.returncode == 0, first.stderr
    assert "naive/default" in first.stdout and "[baseline]" in first.stdout and "[best-gpu]" in first.stdout
    assert "0 failed, 0 wrong" in first.stdout
    data = json.loads(out.read_text())
    assert data["backend"] == "opencl" and len(data["specs"]) > 0
    assert data["counts"]["reused"] == 0
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert "0 measured" in second.stdout and f"{data['counts']['measured']} reused" in second.stdout
    shown = cli("report")
    assert shown.returncode == 0 and "metalbench run 2" in shown.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = -4\nk = 8\n')
    for args, needle in [
        (["run", "--suite", str(tmp_path / "missing.toml")], "missing.toml"),
        (["run", "--suite", str(bad)], "bad.toml"),
        (["run", "--backend", "vulkan"], "unknown backend 'vulkan'"),
        (["run", "--kernels", str(tmp_path / "nowhere")], "nowhere"),
        (["report", "99"], "no run 99"),
    ]:
        result = cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("metalbench: error:") and needle in lines[0], lines


def test_malformed_suite_names_spec_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = 8\nk = 8\n'
                   '[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = -4\nk = 8\n')
    result = cli("run", "--suite", str(bad))
    assert result.returncode == 2
    assert "spec 1" in result.stderr and "'n'" in result.stderr


def test_devices_and_list(opencl):
    devices = cli("devices")
    assert devices.returncode == 0 and "opencl" in devices.stdout and opencl.info["name"][:20] in devices.stdout
    listing = cli("list", "--suite", "qwen2.5-0.5b-decode")
    assert listing.returncode == 0
    for word in ("qwen2.5-0.5b-decode", "smoke", "naive/default", "gemv/", "[19]"):
        assert word in listing.stdout


def test_console_script_is_installed():
    exe = shutil.which("metalbench")
    assert exe, "pip install did not put the metalbench script on PATH"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout
