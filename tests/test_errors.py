"""Every error of the native core starts with "[backend::operation] ", then the label where there is one.

Each error reachable on OpenCL (PoCL in CI) is provoked once: from the core's own checks ("[core::...]")
and from the OpenCL backend ("[opencl::...]").
"""

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from metalbench import _core

SCALE = "__kernel void scale(__global float* x, const float s) { x[get_global_id(0)] *= s; }"


@pytest.fixture(scope="module")
def setup(opencl):
    kernel = opencl.compile(SCALE, "scale", {}, "test/scale")
    return opencl, kernel, opencl.allocate(1024)


def cases(dev, kernel, buf):
    one = struct.pack("<f", 1.0)
    return [
        # compile errors
        (_core.CompileError, "[opencl::compile] test/broken: ", lambda: dev.compile("__kernel void scale(", "scale",
                                                                                    {}, "test/broken")),
        (_core.CompileError, "[opencl::compile] test/entry: no kernel named 'other'",
         lambda: dev.compile(SCALE, "other", {}, "test/entry")),
        (_core.UsageError, "[opencl::builtin] test/blas: ", lambda: dev.builtin("cublas", "test/blas")),
        (_core.UsageError, "[opencl::load] test/lib: ", lambda: dev.load("scale.metallib", "scale", "test/lib")),
        # bad defines
        (_core.UsageError, "[core::compile] test/define: define name 'A B'",
         lambda: dev.compile(SCALE, "scale", {"A B": "1"}, "test/define")),
        (_core.UsageError, "[core::compile] test/define: define X = '1 -O0'",
         lambda: dev.compile(SCALE, "scale", {"X": "1 -O0"}, "test/define")),
        # bad launches
        (_core.UsageError, "[core::launch] test/scale: launch of 0x1x1 groups",
         lambda: dev.run(kernel, [buf, one], [0], [1])),
        (_core.UsageError, "[core::launch] test/scale: group of 100000 threads",
         lambda: dev.run(kernel, [buf, one], [1], [100000])),
        (_core.UsageError, "[core::launch] test/scale: groups takes 1 to 3 dimensions",
         lambda: dev.run(kernel, [buf, one], [1, 1, 1, 1], [1])),
        (_core.UsageError, "[core::launch] test/scale: argument 1 must be a Buffer or bytes",
         lambda: dev.run(kernel, [buf, 1.0], [1], [1])),
        (_core.DeviceError, "[opencl::launch] test/scale: setting argument 1",
         lambda: dev.run(kernel, [buf, struct.pack("<d", 1.0)], [1], [1])),
        # bad allocation sizes, copies and views
        (_core.UsageError, "[core::allocate] ", lambda: dev.allocate(0)),
        (_core.DeviceError, "[opencl::allocate] ", lambda: dev.allocate(1 << 50)),
        (_core.UsageError, "[core::view] cannot view 1024 bytes at offset 512",
         lambda: buf.view(512, 1024)),
        (_core.DeviceError, "[opencl::view] ", lambda: buf.view(4, 4)),  # not a multiple of view_alignment
        (_core.UsageError, "[core::write] ", lambda: buf.write(np.zeros(300, np.float32))),
        (_core.UsageError, "[core::read] ", lambda: buf.read(np.zeros(1, np.float32), 1024)),
        (_core.UsageError, "[core::copy] ", lambda: buf.copy_from(dev.allocate(512))),
        # unknown backends and devices
        (_core.UsageError, "[core::backend] unknown backend 'vulkan'", lambda: _core.open("vulkan")),
        (_core.UsageError, "[core::backend] unknown backend 'vulkan'", lambda: _core.devices("vulkan")),
        (_core.UsageError, "[opencl::open] no device 99", lambda: _core.open("opencl", 99)),
        # measure settings
        (_core.UsageError, "[core::measure] max_time", lambda: dev.measure(kernel, [buf, one], [1], [1],
                                                                           max_time=-1.0)),
        (_core.UsageError, "[core::measure] rank_by", lambda: dev.measure(kernel, [buf, one], [1], [1],
                                                                          rank_by="wall")),
        (_core.UsageError, "[core::measure] resets: ", lambda: dev.measure(kernel, [buf, one], [1], [1],
                                                                           resets=[(buf,)])),
        (_core.UsageError, "[core::measure] resets: ", lambda: dev.measure(kernel, [buf, one], [1], [1],
                                                                           resets=[buf])),
        (_core.UsageError, "[core::measure] a reset copies", lambda: dev.measure(
            kernel, [buf, one], [1], [1], resets=[(buf, dev.allocate(4))])),
        (_core.UsageError, "[core::measure] args: ", lambda: dev.measure(kernel, [[buf, one], buf], [1], [1])),
    ]


def test_errors_name_their_backend_and_operation_first(setup):
    failures = []
    for kind, prefix, provoke in cases(*setup):
        try:
            provoke()
            failures.append(f"{prefix!r}: nothing was raised")
        except Exception as e:
            if not isinstance(e, kind) or not str(e).startswith(prefix):
                failures.append(f"{prefix!r} ({kind.__name__}): got {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


# An error constructed with a message that starts with a string literal, and that literal.
LITERAL_MESSAGE = re.compile(r'\b(?:UsageError|UnavailableError|DeviceError|CompileError|logic_error)'
                             r'\(\s*(?:std::string\()?"([^"]*)')


def test_error_messages_in_csrc_that_start_with_a_literal_start_with_a_prefix():
    """A static check over every backend, built here or not. Messages that start with a variable (a backend's
    `where(...)` or `who`) are not seen here; the test above checks those reachable on OpenCL."""
    root = Path(__file__).resolve().parents[1] / "csrc"
    bare = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".cpp", ".h", ".mm")):
        text = path.read_text()
        for m in LITERAL_MESSAGE.finditer(text):
            if not m.group(1).startswith("["):
                bare.append(f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert not bare, "\n".join(bare)
