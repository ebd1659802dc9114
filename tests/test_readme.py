"""The README's examples, run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from metalbench import backends

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_embedding_example_runs_as_written(opencl, capsys):
    if backends.pick_backend("auto") != "opencl":
        pytest.skip("the example's kernel is OpenCL C; this machine's first backend is another")
    (block,) = python_blocks()
    exec(compile(block, str(README), "exec"), {})
    medians = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()}
    assert set(medians) == {"gpu", "batch", "cpu"} and all(m > 0 for m in medians.values())


def test_embedding_example_type_checks(tmp_path):
    """mypy checks the example against the installed package's stubs (python/metalbench/py.typed, _core.pyi)."""
    pytest.importorskip("mypy", reason="mypy is not installed (the `test` extra installs it)")
    (block,) = python_blocks()
    example = tmp_path / "example.py"
    example.write_text(block)
    # From tmp_path, so that no configuration and no source tree but the installed package's is seen.
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                           str(example)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # The stubs, not a fallback to Any, are what was checked.
    example.write_text("import metalbench\nreveal_type(metalbench.open_device().measure)\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(example)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert "Overload(" in done.stdout and "metalbench._core.Buffer" in done.stdout, done.stdout


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


def test_ci_runs_the_readmes_test_command_word_for_word():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    tests = next(b for b in blocks if "pytest" in b)
    assert f"{tests} || exit $?" in ci, tests


def test_benchmarks_guide_lists_every_script():
    """benchmarks/CUDA.md's usage block names every script in benchmarks/ (modules they
    import, `_common` and `nvrtc`, are not scripts), so a new benchmark cannot go unlisted."""
    folder = Path(__file__).parent.parent / "benchmarks"
    guide = (folder / "CUDA.md").read_text()
    usage = guide[guide.index("```sh"):guide.index("```", guide.index("```sh") + 5)]
    scripts = {p.name for p in folder.glob("*.py") if not p.name.startswith("_") and p.name != "nvrtc.py"}
    listed = set(re.findall(r"python benchmarks/(\w+\.py)", usage))
    assert scripts == listed
