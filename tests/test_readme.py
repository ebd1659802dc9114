"""The README's examples, run as written."""

import re
from pathlib import Path

import pytest

from metalbench import runner

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_embedding_example_runs_as_written(opencl, capsys):
    if runner.pick_backend("auto") != "opencl":
        pytest.skip("the example's kernel is OpenCL C; this machine's first backend is another")
    (block,) = python_blocks()
    exec(compile(block, str(README), "exec"), {})
    gpu_median, cpu_median, *_ = capsys.readouterr().out.split()
    assert float(gpu_median) > 0 and float(cpu_median) > 0


def test_readme_suite_and_family_examples_load(tmp_path):
    from metalbench import specs, variants

    text = README.read_text()
    suite = re.search(r"```toml\n(# mysuite\.toml.*?)```", text, flags=re.S).group(1)
    (tmp_path / "mysuite.toml").write_text(suite)
    loaded = specs.load_suite(tmp_path / "mysuite.toml")
    assert loaded.specs[0].n == 4096 and loaded.specs[0].orig.device == "Apple M2"

    family = re.search(r"```toml\n(# mykernels/rowdot\.toml.*?)```", text, flags=re.S).group(1)
    (tmp_path / "rowdot.toml").write_text(family)
    (tmp_path / "rowdot.c").write_text("MB_KERNEL(rowdot) { }\n")
    ids = [v.id for v in variants.expand(variants.parse_family(tmp_path / "rowdot.toml"))]
    assert ids == ["rowdot/tg64", "rowdot/tg128"]
