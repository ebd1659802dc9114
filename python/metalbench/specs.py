"""Problem specs, their semantics, and suites of them (TOML files).

A spec is one GEMM as a model runs it: C[b] = op(A[b] . B[b]) for b < batch,
A logical m x k, B logical k x n, all row-major as stored. `transpose_a` means A
is stored k x m; `transpose_b` means B is stored n x k (the usual layout of a
linear layer's weight). The ops:

- matmul:            C = A.B
- matmul_bias_add:   C = A.B + bias[n]
- matmul_alpha_beta: C = alpha A.B + beta C   (with beta == 0, C is not read)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["DTYPES", "OPS", "Orig", "Spec", "SpecError", "Suite", "SuiteError", "builtin_suites", "load_suite"]

OPS: tuple[str, ...] = ("matmul", "matmul_bias_add", "matmul_alpha_beta")
DTYPES: dict[str, np.dtype] = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}
_SHORT_OP = {"matmul": "matmul", "matmul_bias_add": "bias_add", "matmul_alpha_beta": "alpha_beta"}
# The kernel ABI indexes with 32-bit ints (kernels/include/common.h).
_INT32_LIMIT = 2**31
_SUITES = Path(__file__).resolve().parent / "suites"


class SpecError(ValueError):
    """A spec that cannot be run as given."""


class SuiteError(ValueError):
    """A suite that cannot be loaded; the message names the file, the spec and the field."""


@dataclass(frozen=True)
class Orig:
    """The implementation a trace recorded for a spec, and its time there."""

    impl: str
    ms: float
    device: str


@dataclass(frozen=True)
class Spec:
    op: str
    dtype: str
    batch: int
    m: int
    n: int
    k: int
    transpose_a: bool = False
    transpose_b: bool = False
    alpha: float = 1.0
    beta: float = 0.0
    orig: Orig | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise SpecError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("batch", "m", "n", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        for name, shape in (("A", self.shape_a), ("B", self.shape_b), ("C", self.shape_c)):
            if shape[0] * shape[1] * shape[2] >= _INT32_LIMIT:
                raise SpecError(f"{name} has {shape[0] * shape[1] * shape[2]} elements; kernels index with "
                                "32-bit integers, so at most 2**31 - 1")

    @property
    def bias(self) -> bool:
        return self.op == "matmul_bias_add"

    @property
    def shape_a(self) -> tuple[int, int, int]:
        return (self.batch, self.k, self.m) if self.transpose_a else (self.batch, self.m, self.k)

    @property
    def shape_b(self) -> tuple[int, int, int]:
        return (self.batch, self.n, self.k) if self.transpose_b else (self.batch, self.k, self.n)

    @property
    def shape_c(self) -> tuple[int, int, int]:
        return (self.batch, self.m, self.n)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    def key(self) -> str:
        """Everything that changes the result, and nothing else (not `orig`)."""
        key = (f"{self.op}:{self.dtype}:b{self.batch}:m{self.m}:n{self.n}:k{self.k}:"
               f"ta{int(self.transpose_a)}:tb{int(self.transpose_b)}")
        if self.op == "matmul_alpha_beta":
            key += f":alpha{self.alpha!r}:beta{self.beta!r}"
        return key

    def label(self) -> str:
        """A short name for tables: op, [batch x] m x n x k, layout of A and B (n: as is, t: transposed)."""
        layout = ("t" if self.transpose_a else "n") + ("t" if self.transpose_b else "n")
        dims = f"{self.m}x{self.n}x{self.k}" if self.batch == 1 else f"{self.batch} x {self.m}x{self.n}x{self.k}"
        text = f"{_SHORT_OP[self.op]} {dims} {layout}"
        if self.op == "matmul_alpha_beta":
            text += f" a={self.alpha:g} b={self.beta:g}"
        if self.dtype != "float16":
            text += f" {self.dtype}"
        return text

    def fields(self) -> dict[str, object]:
        """The names manifest expressions see (kernels/README.md)."""
        return {
            "op": self.op, "dtype": self.dtype, "batch": self.batch, "m": self.m, "n": self.n, "k": self.k,
            "transpose_a": self.transpose_a, "transpose_b": self.transpose_b, "alpha": self.alpha,
            "beta": self.beta, "bias": self.bias,
        }

    def params(self) -> bytes:
        """The MBParams struct of kernels/include/common.h: sixteen little-endian 4-byte fields."""
        return struct.pack(
            "<13i2fi",
            self.batch, self.m, self.n, self.k,
            self.shape_a[2], self.shape_b[2], self.n,
            self.m * self.k, self.k * self.n, self.m * self.n,
            int(self.transpose_a), int(self.transpose_b), OPS.index(self.op),
            self.alpha, self.beta, 0,
        )

    def bytes_moved(self) -> int:
        """The least DRAM traffic the op can cost: read A, B (and C, bias when used), write C."""
        elements = self.batch * (self.m * self.k + self.k * self.n + self.m * self.n)
        if self.op == "matmul_alpha_beta" and self.beta != 0:
            elements += self.batch * self.m * self.n
        if self.bias:
            elements += self.n
        return elements * self.itemsize

    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    specs: tuple[Spec, ...]
    path: Path


# Suite file keys: the top level may set defaults for every spec.
_SPEC_KEYS = {f.name for f in fields(Spec)} - {"orig"}
_DEFAULT_KEYS = {"dtype", "op", "batch", "m", "n", "k", "transpose_a", "transpose_b", "alpha", "beta"}
_TOP_KEYS = {"name", "description", "orig_device", "spec"} | _DEFAULT_KEYS
_TYPES: dict[str, tuple[type, ...]] = {
    "op": (str,), "dtype": (str,), "batch": (int,), "m": (int,), "n": (int,), "k": (int,),
    "transpose_a": (bool,), "transpose_b": (bool,), "alpha": (int, float), "beta": (int, float),
}


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in _SUITES.glob("*.toml"))


def _check_type(where: str, key: str, value: object) -> None:
    kinds = _TYPES[key]
    # bool is an int to Python, but `m = true` is a typo, not a 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("number" if k is float else k.__name__ for k in kinds if k is not int or
                            float not in kinds)
        raise SuiteError(f"{where}: field '{key}': must be {names}, got {value!r}")


def _parse_orig(where: str, value: object, device: str | None) -> Orig:
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: field 'orig': must be a table like {{ impl = \"mps\", ms = 0.3 }}")
    unknown = set(value) - {"impl", "ms", "device"}
    if unknown:
        raise SuiteError(f"{where}: field 'orig.{sorted(unknown)[0]}': unknown (known: impl, ms, device)")
    impl, ms, dev = value.get("impl"), value.get("ms"), value.get("device", device)
    if not isinstance(impl, str):
        raise SuiteError(f"{where}: field 'orig.impl': must be a string")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms <= 0:
        raise SuiteError(f"{where}: field 'orig.ms': must be a positive number of milliseconds, got {ms!r}")
    if not isinstance(dev, str):
        raise SuiteError(f"{where}: field 'orig.device': give it here or as the suite's orig_device")
    return Orig(impl, float(ms), dev)


def _parse(path: Path, data: dict) -> Suite:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SuiteError(f"{path}: unknown field '{sorted(unknown)[0]}' (known: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise SuiteError(f"{path}: field 'name': must be a string")
    defaults = {k: v for k, v in data.items() if k in _DEFAULT_KEYS}
    for key, value in defaults.items():
        _check_type(str(path), key, value)
    device = data.get("orig_device")
    if device is not None and not isinstance(device, str):
        raise SuiteError(f"{path}: field 'orig_device': must be a string")
    raw = data.get("spec", [])
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{path}: no [[spec]] tables")
    specs = []
    for index, table in enumerate(raw):
        where = f"{path}: spec {index}"
        unknown = set(table) - _SPEC_KEYS - {"orig"}
        if unknown:
            raise SuiteError(f"{where}: field '{sorted(unknown)[0]}': unknown "
                             f"(known: {', '.join(sorted(_SPEC_KEYS | {'orig'}))})")
        values = {"dtype": "float16", **defaults, **{k: v for k, v in table.items() if k != "orig"}}
        for key, value in values.items():
            _check_type(where, key, value)
        missing = [k for k in ("op", "batch", "m", "n", "k") if k not in values]
        if missing:
            raise SuiteError(f"{where}: field '{missing[0]}': missing")
        orig = _parse_orig(where, table["orig"], device) if "orig" in table else None
        try:
            specs.append(Spec(**values, orig=orig))
        except SpecError as e:
            field_name = str(e).split(" ", 1)[0]
            raise SuiteError(f"{where}: field '{field_name}': {e}") from None
    return Suite(name, str(data.get("description", "")), tuple(specs), path)


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name, or a suite file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        # Suite names contain dots ("qwen2.5-0.5b-decode"), so a name is told from
        # a path by what exists, not by its shape.
        if str(name_or_path) in builtin_suites():
            path = _SUITES / f"{name_or_path}.toml"
        elif path.suffix == ".toml" or path.parent != Path():
            raise SuiteError(f"{path}: no such suite file")
        else:
            raise SuiteError(f"no built-in suite '{name_or_path}' (built-in: {', '.join(builtin_suites())}); "
                             "give a path to use a suite file")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise SuiteError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: {e}") from None
    return _parse(path, data)
