"""`metalbench` as a user runs it: a real process, real output, real exit codes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import cli

from metalbench.store import Store


def test_run_report_and_rerun(opencl, tmp_path):
    out = tmp_path / "report.json"
    args = ["run", "--suite", "smoke", "--backend", "opencl", "--variants", "gemv/*", "--max-samples", "3",
            "--min-samples", "2", "--max-time", "0.05"]
    first = cli(*args, "--json", str(out))
    assert first.returncode == 0, first.stderr
    assert "naive/default" in first.stdout and "[baseline]" in first.stdout and "[best]" in first.stdout
    assert "0 failed, 0 wrong, 0 timed out, 0 crashed" in first.stdout
    data = json.loads(out.read_text())
    assert data["backend"] == "opencl" and len(data["specs"]) > 0 and data["schema"].startswith("1.")
    assert data["counts"]["reused"] == 0
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert "0 measured" in second.stdout and f"{data['counts']['measured']} reused" in second.stdout
    shown = cli("report")
    assert shown.returncode == 0 and "metalbench run 2" in shown.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = -4\nk = 8\n')
    Store(Path(os.environ["METALBENCH_DB"])).close()
    for args, needle in [
        (["run", "--suite", str(tmp_path / "missing.toml")], "missing.toml"),
        (["run", "--suite", str(bad)], "bad.toml"),
        (["run", "--backend", "vulkan"], "unknown backend 'vulkan'"),
        (["run", "--kernels", str(tmp_path / "nowhere")], "nowhere"),
        (["report", "99"], "no run 99"),
        (["report", "--db", str(tmp_path / "none.sqlite")], "no store here"),
        (["run", "--bogus"], "--bogus"),
        (["run", "--device", "abc"], "--device"),
        (["run", "--max-time", "nan"], "--max-time"),
        (["run", "--max-time", "inf"], "--max-time"),
        (["run", "--max-time", "-1"], "--max-time"),
        (["run", "--min-samples", "0"], "--min-samples"),
        (["run", "--max-noise", "2"], "--max-noise"),
        (["run", "--rank-by", "wall"], "--rank-by"),
        (["run", "--timeout", "0"], "--timeout"),
        (["run", "--tie", "-5"], "--tie"),
        (["report", "--rank-by", "wall"], "--rank-by"),
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


def test_no_arguments_print_the_help_with_the_usage_status():
    result = cli()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "run" in result.stdout and "report" in result.stdout


def test_a_variants_glob_that_matches_nothing_is_a_usage_error(opencl):
    result = cli("run", "--suite", "smoke", "--backend", "opencl", "--variants", "gemv/*", "--variants", "gemvv/*")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--variants 'gemvv/*' matches no variant on opencl" in result.stderr


def test_a_damaged_store_stops_a_run_with_one_line(opencl, tmp_path):
    bad = tmp_path / "damaged.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    result = cli("run", "--suite", "smoke", "--backend", "opencl", "--variants", "naive/*", "--db", str(bad))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged.sqlite" in lines[0] and "Traceback" not in result.stderr


def test_a_bug_is_exit_1_with_its_traceback_saved_not_a_usage_error(tmp_path, monkeypatch, capsys):
    """An exception metalbench did not raise for bad input is a bug: not blamed on the user
    (exit 2), but one line naming the log that holds its traceback, and status 1."""
    import pytest

    from metalbench import cli as cli_module
    from metalbench import specs

    def broken(name):
        raise ValueError("an internal invariant broke")  # a plain ValueError: not an InputError

    monkeypatch.setattr(specs, "load_suite", broken)
    monkeypatch.setattr(sys, "argv", ["metalbench", "list", "--suite", "smoke"])
    monkeypatch.setenv("METALBENCH_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exited:
        cli_module.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("metalbench: internal error: ValueError: an internal invariant broke")
    log = Path(err.rsplit("traceback saved to ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "cache" / "crash-logs"
    assert "Traceback" in log.read_text() and "an internal invariant broke" in log.read_text()


def test_input_errors_keep_exit_2(tmp_path):
    bad = cli("suite", "from-config", str(Path(__file__).parent / "data" / "qwen2.5-0.5b.json"), "--tokens", "0")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "--tokens" in bad.stderr
    for args in (["report", "--json", str(tmp_path / "no" / "such" / "dir" / "r.json")],
                 ["run", "--suite", "smoke", "--csv", str(tmp_path / "no" / "r.csv")],
                 ["export", "--out", str(tmp_path / "a-file" / "out")]):
        (tmp_path / "a-file").write_text("")
        unwritable = cli(*args)
        assert unwritable.returncode == 2 and unwritable.stderr.count("\n") == 1, unwritable.stderr
        assert unwritable.stderr.startswith(f"metalbench: error: {args[-2]} {args[-1]}: "), unwritable.stderr
