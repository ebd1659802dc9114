"""No test writes into the user's own folders: tests run with HOME pointed at an empty
folder leave it empty (conftest.py sends every cache and setting elsewhere)."""

import os
import subprocess
import sys
from pathlib import Path

# A sample that reaches every kind of writer: the CLI (store, reference cache, crash logs),
# PoCL (its kernel cache) in this process and in worker processes, matplotlib (its font
# cache) and a config read.
SAMPLE = ["tests/test_ux.py::test_dash_writes_data_to_stdout_and_the_table_to_stderr",
          "tests/test_ux.py::test_a_run_with_stderr_not_a_terminal_shows_progress_lines",
          "tests/test_ux.py::test_html_memory_bound_suites_get_bandwidth_bars_others_a_roofline",
          "tests/test_hostile.py::test_measure_refuses_slots_of_different_arguments",
          "tests/test_hostile.py::test_a_score_scale_float16_cannot_hold_is_refused_and_an_odd_one_warned"]


def test_tests_leave_an_empty_home_empty(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "METALBENCH_", "POCL_", "MPLCONFIGDIR", "PYTEST_"))}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SAMPLE], cwd=root,
                         env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert left == [], left
