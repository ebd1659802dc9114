"""The layers keep to their side: reports never reach a device, backend facts have one home."""

import ast
from pathlib import Path

import pytest

from metalbench import _core, backends, paths

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "metalbench"
# The report layer, and what it must never reach: the native core and the device side.
REPORT_LAYER = ("report", "formats", "html", "compare")
DEVICE_SIDE = {"_core", "runner", "worker", "ray_pool", "pool", "measure", "peak", "arena"}


def imports_of(module: str) -> set[str]:
    """The metalbench modules `module` imports, at module level or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            else:  # from . import x, y
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metalbench."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("metalbench."))
    return found


def reachable(start: str) -> dict[str, str]:
    """Every metalbench module `start` reaches, each with the module that imports it first."""
    seen, todo = {start: ""}, [start]
    while todo:
        module = todo.pop()
        for name in imports_of(module):
            if name not in seen and (name == "_core" or (PACKAGE / f"{name}.py").is_file()):
                seen[name] = module
                if name != "_core":  # the extension module has no Python source to follow
                    todo.append(name)
    return seen


@pytest.mark.parametrize("module", REPORT_LAYER)
def test_the_report_layer_never_reaches_a_device(module):
    seen = reachable(module)
    bad = sorted(DEVICE_SIDE & set(seen))
    paths_to = []
    for name in bad:
        chain = [name]
        while seen[chain[-1]]:
            chain.append(seen[chain[-1]])
        paths_to.append(" <- ".join(chain))
    assert not bad, f"{module} reaches the device side: {'; '.join(paths_to)}"


def test_the_walk_sees_imports_inside_functions():
    # html imports matplotlib only inside a function; cli imports doctor only inside one.
    assert "doctor" in imports_of("cli")


def test_every_backend_of_the_core_has_traits_and_a_prelude():
    assert set(_core.backends()) <= set(backends.BACKENDS)
    # --backend auto's order is written twice: the core's registration priorities, the traits' order.
    assert list(_core.backends()) == [b for b in backends.BACKENDS if b in _core.backends()]
    include = paths.kernels_dir() / "include"
    native = {p.name for p in (PACKAGE.parents[1] / "csrc").iterdir() if p.is_dir() and p.name != "core"}
    assert native == set(backends.BACKENDS)
    for name in backends.BACKENDS:
        assert (include / f"{name}.h").is_file(), f"{name} has no prelude"
        assert backends.traits(name).name == name
    with pytest.raises(backends.BackendError, match="unknown backend 'vulkan'"):
        backends.traits("vulkan")
