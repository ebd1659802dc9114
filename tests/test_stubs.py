"""The type stubs shipped with metalbench._core describe the installed module."""

import ast
import difflib
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import metalbench
from metalbench import _core

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ROOT / "csrc" / "stub_patterns.txt"


def built_with() -> str:
    """The nanobind release pyproject.toml builds (and so writes the stubs) with."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'requires = \[[^\]]*"nanobind==([^"]+)"', text).group(1)


def regenerate(tmp_path: Path, *extra: str) -> str:
    """The stub nanobind's generator writes for the installed metalbench._core now."""
    pytest.importorskip("nanobind", reason="nanobind is not installed (the `test` extra installs it)")
    if version("nanobind") != built_with():
        pytest.skip(f"nanobind {version('nanobind')} is installed, but the stubs are written by "
                    f"nanobind {built_with()} (pyproject.toml), whose text may differ")
    out = tmp_path / "_core.pyi"
    # From tmp_path, so that the import finds the installed package, not the source tree.
    subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "metalbench._core", "-o", str(out),
                    *extra], cwd=tmp_path, check=True)
    return out.read_text()


def shipped() -> list[Path]:
    """Every _core.pyi an importer or a type checker may read: beside the module, and in the package's folders
    (an editable install's package is its source folder, where the build writes the stub too)."""
    folders = {Path(_core.__file__).parent, *map(Path, metalbench.__path__)}
    return sorted(f / "_core.pyi" for f in folders if (f / "_core.pyi").exists())


def test_the_package_says_it_is_typed():
    assert (Path(metalbench.__file__).parent / "py.typed").exists()
    assert Path(metalbench.__file__).with_name("_core.pyi") in shipped()


def test_shipped_stubs_match_the_module(tmp_path):
    fresh = regenerate(tmp_path, "-p", str(PATTERNS))
    assert shipped(), "no _core.pyi beside metalbench._core or in the metalbench package"
    for stub in shipped():
        diff = "".join(difflib.unified_diff(stub.read_text().splitlines(True), fresh.splitlines(True),
                                            str(stub), "regenerated from the installed module"))
        assert not diff, f"{stub} is stale; rebuild (pip install -e . or pip install .):\n{diff}"


def measure_parameters(stub: str) -> list[list[tuple[str, str | None]]]:
    """Device.measure's parameters in `stub`, as (name, default) per overload."""
    device = next(n for n in ast.parse(stub).body if isinstance(n, ast.ClassDef) and n.name == "Device")
    out = []
    for fn in device.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "measure":
            a = fn.args
            defaults = [None] * (len(a.args) - len(a.defaults)) + a.defaults + a.kw_defaults
            out.append([(p.arg, d and ast.unparse(d)) for p, d in zip(a.args + a.kwonlyargs, defaults, strict=True)])
    return out


def test_measure_overloads_keep_the_binding_parameters(tmp_path):
    """csrc/stub_patterns.txt restates Device.measure; its names and defaults are the binding's own."""
    binding = measure_parameters(regenerate(tmp_path))
    assert len(binding) == 1
    overloads = measure_parameters(regenerate(tmp_path, "-p", str(PATTERNS)))
    assert len(overloads) == 2
    for params in overloads:
        assert params == binding[0]


def test_measure_defaults_are_the_core_config(tmp_path):
    """Device.measure's keyword defaults are MeasureConfig's, as the stub shows them."""
    params = dict(measure_parameters(regenerate(tmp_path))[0])
    config = _core.MeasureConfig()
    settings = [name for name in dir(config) if not name.startswith("_") and name != "check"]
    assert settings and set(settings) <= params.keys()
    for name in settings:
        assert ast.literal_eval(params[name]) == getattr(config, name), name
