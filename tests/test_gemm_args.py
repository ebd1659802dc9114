"""The checks every vendor builtin (cuBLAS, MPS) makes of its GEMM arguments
(csrc/core/gemm_args.cpp), which only a GPU reaches through the backends: here they
are compiled with a host-memory Buffer and fed params packed by Spec.params()."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import patched

from metalbench import _core, quant
from metalbench.specs import DTYPES, Spec

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

# Reads one launch a line, "element size_a size_b size_c size_bias size_ws params_hex",
# where a size of "bytes" passes bytes rather than a buffer and "-" passes nothing, and
# prints what gemm_params and gemm_buffers_short make of it: "ok", or the error.
DRIVER = r"""
#include <iostream>
#include <sstream>
#include <string>

#include "core/gemm_args.h"

struct Host final : mb::Buffer {
  explicit Host(size_t n) : n(n) {}
  size_t bytes() const override { return n; }
  void write(const void*, size_t, size_t) override {}
  void read(void*, size_t, size_t) const override {}
  void fill(uint8_t) override {}
  void copy_from(const mb::Buffer&) override {}
  std::shared_ptr<mb::Buffer> view(size_t, size_t) override { return nullptr; }
  size_t n;
};

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    size_t element;
    std::string token;
    in >> element;
    mb::Launch launch;
    for (int i = 0; i < 5 && in >> token; ++i) {
      if (token == "-") continue;
      if (token == "bytes") launch.args.emplace_back(std::vector<uint8_t>(4));
      else launch.args.emplace_back(std::make_shared<Host>(std::stoull(token)));
    }
    while (in >> token) {
      std::vector<uint8_t> raw;
      for (size_t i = 0; i + 1 < token.size(); i += 2)
        raw.push_back(uint8_t(std::stoi(token.substr(i, 2), nullptr, 16)));
      launch.args.emplace_back(raw);
    }
    try {
      MBParams p = mb::gemm_params(launch, "[test::launch] x: ");
      std::string short_by = mb::gemm_buffers_short(launch, p, element);
      std::cout << (short_by.empty() ? "ok" : short_by) << "\n";
    } catch (const mb::UsageError& e) {
      std::cout << e.what() << "\n";
    }
  }
}
"""


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """Runs launches through the compiled checks: each a (element, sizes, params...) tuple."""
    if CXX is None:
        pytest.skip("no C++ compiler")
    folder = tmp_path_factory.mktemp("gemm_args")
    (folder / "driver.cpp").write_text(DRIVER)
    exe = folder / "driver"
    sources = [str(folder / "driver.cpp"), str(ROOT / "csrc" / "core" / "gemm_args.cpp"),
               str(ROOT / "csrc" / "core" / "abi.cpp")]
    built = subprocess.run([CXX, "-std=c++17", "-Wall", "-Werror", "-I", str(ROOT / "csrc"),
                            "-I", str(ROOT / "kernels" / "include"), *sources, "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    def run(*launches: tuple) -> list[str]:
        lines = [" ".join(str(x) if not isinstance(x, bytes) else x.hex() for x in launch) for launch in launches]
        done = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
        return done.stdout.splitlines()

    return run


def sizes(spec: Spec, element: int | None = None) -> list[int]:
    """The exact bytes of A, B, C, the bias and a workspace for `spec`."""
    es = element or DTYPES[spec.dtype].itemsize
    return [math.prod(spec.shape_a) * es, math.prod(spec.shape_b) * es, math.prod(spec.shape_c) * es,
            spec.n * es, 4]


SPECS = [Spec("matmul", "float32", 1, 1, 40, 72, False, True), Spec("matmul", "float16", 3, 5, 7, 11, True, False),
         Spec("matmul_bias_add", "float32", 1, 2, 9, 6, False, False),
         Spec("matmul_alpha_beta", "float16", 2, 4, 6, 8, True, True, alpha=0.5, beta=1.0)]


@pytest.mark.parametrize("spec", SPECS, ids=[s.label() for s in SPECS])
def test_buffers_of_the_exact_size_pass_and_a_byte_less_does_not(check, spec):
    es = DTYPES[spec.dtype].itemsize
    exact = sizes(spec)
    assert check((es, *exact, spec.params())) == ["ok"]
    names = ["A", "B", "C", "bias"] if spec.op == "matmul_bias_add" else ["A", "B", "C"]
    for i, name in enumerate(names):
        smaller = [*exact]
        smaller[i] -= 1
        got = check((es, *smaller, spec.params()))[0]
        need = exact[i] // es
        assert got == (f"the buffers are smaller than the params address: {name} needs {need} elements of {es} "
                       f"bytes, its buffer has {exact[i] - 1} bytes")


def test_the_element_size_decides_what_fits(check):
    spec = SPECS[1]
    half = sizes(spec)  # float16
    assert check((2, *half, spec.params()), (4, *half, spec.params())) == [
        "ok", f"the buffers are smaller than the params address: A needs {math.prod(spec.shape_a)} elements of 4 "
              f"bytes, its buffer has {half[0]} bytes"]


def test_malformed_launches_are_refused_naming_the_problem(check):
    spec = SPECS[0]
    ok = sizes(spec)
    got = check(
        (4, *ok[:4], "-", spec.params()),
        (4, *ok, spec.params(), spec.params()),
        (4, *ok, spec.params()[:60]),
        (4, ok[0], "bytes", *ok[2:], spec.params()),
        (4, *ok, patched(spec, m=0)),
        (4, *ok, patched(spec, op=7)),
        (4, *ok, patched(spec, ldc=-1)),
        (4, *ok, patched(spec, lda=71)),
        (4, *ok, patched(spec, batch=-2)),
    )
    assert got == [
        "[test::launch] x: takes the 6 GEMM arguments (a, b, c, bias, ws, params), got 5",
        "[test::launch] x: takes the 6 GEMM arguments (a, b, c, bias, ws, params), got 7",
        f"[test::launch] x: argument 5 must be the {_core.abi()['params']['size']} bytes of MBParams "
        "(kernels/include/common.h)",
        "[test::launch] x: argument 1 must be a buffer",
        "[test::launch] x: empty problem: batch, m, n and k must be positive, got 1, 0, 40, 72",
        "[test::launch] x: unknown op 7",
        "[test::launch] x: row pitches and batch strides must not be negative",
        "[test::launch] x: A has a row pitch of 71 elements for 72 columns",
        "[test::launch] x: empty problem: batch, m, n and k must be positive, got -2, 1, 40, 72",
    ]


def test_every_op_code_of_the_abi_is_known(check):
    spec = SPECS[2]
    for code in _core.abi()["ops"].values():
        assert check((4, *sizes(spec), patched(spec, op=code))) == ["ok"]


QSPEC = Spec("matmul", "float16", 2, 1, 24, 128, False, True, quant="affine-q3-g32")


def qsizes(spec: Spec) -> list[int]:
    """The exact bytes of A, B (codes, scales and biases: quant.b_layout), C, the bias and a workspace."""
    es = DTYPES[spec.dtype].itemsize
    layout = quant.b_layout(quant.parse(spec.quant), spec.batch, spec.n, spec.k, es)
    return [math.prod(spec.shape_a) * es, layout.nbytes, math.prod(spec.shape_c) * es, spec.n * es, 4]


def test_a_quantized_b_is_its_codes_scales_and_biases(check):
    layout = quant.b_layout(quant.parse(QSPEC.quant), QSPEC.batch, QSPEC.n, QSPEC.k, 2)
    exact = qsizes(QSPEC)
    words = QSPEC.batch * QSPEC.n * QSPEC.k * 3 // 32
    per = QSPEC.batch * QSPEC.n * QSPEC.k // 32
    codes_only, no_biases = [*exact], [*exact]
    codes_only[1] = words * 4
    no_biases[1] = exact[1] - 1
    assert check((2, *exact, QSPEC.params()), (2, *codes_only, QSPEC.params()), (2, *no_biases, QSPEC.params())) == [
        "ok",
        f"the buffers are smaller than the params address: B's scales needs {layout.scales + per} elements of 2 "
        f"bytes, its buffer has {words * 4} bytes",
        f"the buffers are smaller than the params address: B's biases needs {layout.biases + per} elements of 2 "
        f"bytes, its buffer has {exact[1] - 1} bytes"]
    short = [*exact]
    short[1] = words * 4 - 1
    assert check((2, *short, QSPEC.params())) == [
        f"the buffers are smaller than the params address: B needs {words} elements of 4 bytes, its buffer has "
        f"{words * 4 - 1} bytes"]


def test_only_mlxs_affine_formats_are_taken(check):
    """The bit widths and group sizes gemm_params takes are quant.py's, no more."""
    every = [Spec("matmul", "float16", 2, 1, 24, 128, False, True, quant=f"affine-q{bits}-g{group}")
             for bits in quant.BITS for group in quant.GROUPS]
    assert check(*[(2, *qsizes(s), s.params()) for s in every]) == ["ok"] * len(every)
    ok = qsizes(QSPEC)
    bad = [(2, *ok, patched(QSPEC, qbits=bits)) for bits in (1, 7, 9, 16)]
    bad += [(2, *ok, patched(QSPEC, qgroup=group)) for group in (16, 48, 256)]
    assert all("are not MLX's affine format (bits 2, 3, 4, 5, 6 or 8; group 32, 64 or 128)" in line
               for line in check(*bad))
    assert check((2, *ok, patched(QSPEC, qgroup=128, k=160)), (2, *ok, patched(QSPEC, trans_b=0)),
                 (2, *ok, patched(QSPEC, qscales=-1))) == [
        "[test::launch] x: quantized B: group 128 does not divide k = 160",
        "[test::launch] x: quantized B must be stored n x k (trans_b)",
        "[test::launch] x: quantized B: scale and bias offsets must not be negative"]
    # The message names the sets quant.py has: one fact, two copies, tied here.
    assert "bits " + ", ".join(map(str, quant.BITS[:-1])) + f" or {quant.BITS[-1]}" == "bits 2, 3, 4, 5, 6 or 8"
    assert "group " + ", ".join(map(str, quant.GROUPS[:-1])) + f" or {quant.GROUPS[-1]}" == "group 32, 64 or 128"
