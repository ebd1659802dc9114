"""Problem specs, their semantics, and suites of them (TOML files).

A spec is one GEMM as a model runs it: for every b < batch, C[b] = op(A[b] . B[b])
with A logical m x k, B logical k x n and C m x n, all stored row-major and
contiguous. `transpose_a` means A is stored k x m; `transpose_b` means B is stored
n x k (the layout of a linear layer's weight). The ops:

- matmul:            C = A.B
- matmul_bias_add:   C = A.B + bias[n]
- matmul_alpha_beta: C = alpha A.B + beta C   (beta == 0: C is not read, as in BLAS)
"""

from __future__ import annotations

import difflib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import quant as quantfmt
from .dtypes import DTYPES
from .errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["DTYPES", "OPS", "PARAMS_FIELDS", "SHORT_OPS", "Orig", "Spec", "SpecError", "Suite", "SuiteError",
           "builtin_suites", "kernel_abi", "load_suite", "spec_from_key"]

# In the order of their codes in kernels/include/common.h (MB_OP_MATMUL is 0).
OPS: tuple[str, ...] = ("matmul", "matmul_bias_add", "matmul_alpha_beta")
# Each op's short name: in labels, and the suffix of its MB_OP_* in common.h.
SHORT_OPS: dict[str, str] = {"matmul": "matmul", "matmul_bias_add": "bias_add", "matmul_alpha_beta": "alpha_beta"}

# MBParams (kernels/include/common.h) in memory order: each field's name and its
# struct code. tests/test_specs.py checks it against the layout the core was compiled
# with (_core.abi()), so a field added to common.h is added here, with its value in
# Spec.params().
PARAMS_FIELDS: tuple[tuple[str, str], ...] = (
    ("batch", "i"), ("m", "i"), ("n", "i"), ("k", "i"),
    ("lda", "i"), ("ldb", "i"), ("ldc", "i"),
    ("stride_a", "i"), ("stride_b", "i"), ("stride_c", "i"),
    ("trans_a", "i"), ("trans_b", "i"), ("op", "i"),
    ("alpha", "f"), ("beta", "f"),
    ("qbits", "i"), ("qgroup", "i"), ("qscales", "i"), ("qbiases", "i"),
    ("reserved", "i"),
)
# Little endian with standard sizes and no padding: the layout of every backend here.
_PARAMS = struct.Struct("<" + "".join(code for _, code in PARAMS_FIELDS))
# Kernels compute element offsets in int32 (common.h), so no matrix may hold more.
_INT32_MAX = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SUITES = Path(__file__).resolve().parent / "suites"


def kernel_abi() -> dict[str, dict]:
    """The kernel ABI as this module packs it, in the form of _core.abi() (which gives
    it as the core was compiled): MBParams' size and each field's offset and struct
    code, and each op's code by its short name."""
    fields, offset = {}, 0
    for name, code in PARAMS_FIELDS:
        fields[name] = {"offset": offset, "format": code}
        offset += struct.calcsize("<" + code)
    return {"params": {"size": _PARAMS.size, "fields": fields},
            "ops": {SHORT_OPS[op]: code for code, op in enumerate(OPS)}}


class SpecError(InputError, ValueError):
    """A spec that cannot be run as given; the message names the field."""


class SuiteError(InputError, ValueError):
    """A suite that cannot be loaded.

    The message names the file, the spec (by its 0-based position among the
    file's [[spec]] tables, as `metalbench list` numbers them) and the field.
    """


def _show(value: object) -> str:
    # Values as the TOML author wrote them: `true`, not `True`.
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _count(value: object, name: str) -> int:
    # bool is an int to Python, but `m = true` is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"field '{name}': must be a positive integer, got {_show(value)}")
    if value < 1:
        raise SpecError(f"field '{name}': must be a positive integer, got {value}")
    return int(value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise SpecError(f"field '{name}': must be true or false, got {_show(value)}")
    return bool(value)


def _scalar(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(f"field '{name}': must be a number, got {_show(value)}")
    x = float(value)
    # Kernels receive alpha and beta as float32 (MBParams): a value that overflows or
    # underflows there would run a different product than the one written.
    if not math.isfinite(x) or abs(x) > _FLOAT32_MAX or (x != 0 and np.float32(x) == 0):
        raise SpecError(f"field '{name}': must be a finite float32 value, got {x!r}")
    return x + 0.0  # -0.0 -> 0.0: one spelling per value keeps key() canonical


def _choice(value: object, name: str, allowed: tuple[str, ...] | dict[str, object]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"field '{name}': must be one of {', '.join(allowed)}, got {_show(value)}")
    return value


@dataclass(frozen=True)
class Orig:
    """The implementation the traced application used for a spec, and its time there."""

    impl: str
    ms: float
    device: str

    def __post_init__(self) -> None:
        for name in ("impl", "device"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(f"field 'orig.{name}': must be a non-empty string, got {_show(value)}")
        ms = self.ms
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
            raise SpecError(f"field 'orig.ms': must be a positive number of milliseconds, got {_show(ms)}")
        object.__setattr__(self, "ms", float(ms))


@dataclass(frozen=True)
class Spec:
    """One GEMM problem; validated on construction (SpecError)."""

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
    # B's quantization ("affine-q4-g64": quant.py), or None for B in the dtype.
    quant: str | None = None

    def __post_init__(self) -> None:
        # Normalised in place (frozen): alpha = 1 and alpha = 1.0 must be one spec with one key.
        values = {
            "op": _choice(self.op, "op", OPS),
            "dtype": _choice(self.dtype, "dtype", DTYPES),
            **{name: _count(getattr(self, name), name) for name in ("batch", "m", "n", "k")},
            "transpose_a": _flag(self.transpose_a, "transpose_a"),
            "transpose_b": _flag(self.transpose_b, "transpose_b"),
            "alpha": _scalar(self.alpha, "alpha"),
            "beta": _scalar(self.beta, "beta"),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if self.op != "matmul_alpha_beta":
            # Only alpha/beta reads them; accepting others would silently run a different product.
            for name, neutral in (("alpha", 1.0), ("beta", 0.0)):
                if getattr(self, name) != neutral:
                    raise SpecError(f"field '{name}': only matmul_alpha_beta uses it; must be {neutral} for "
                                    f"{self.op}, got {getattr(self, name)!r}")
        if self.quant is not None:
            self._check_quant()
        if self.orig is not None and not isinstance(self.orig, Orig):
            raise SpecError(f"field 'orig': must be an Orig or None, got {self.orig!r}")
        matrices = (("A", "'batch' x 'm' x 'k'", self.shape_a), ("B", "'batch' x 'k' x 'n'", self.shape_b),
                    ("C", "'batch' x 'm' x 'n'", self.shape_c))
        for what, dims, shape in matrices:
            count = math.prod(shape)
            if count > _INT32_MAX:
                raise SpecError(f"fields {dims}: {what} would hold {count} elements; kernels index with int32, "
                                f"so at most {_INT32_MAX}")

    def _check_quant(self) -> None:
        try:
            q = quantfmt.parse(self.quant)
        except ValueError as e:
            raise SpecError(f"field 'quant': {e}") from None
        if not self.transpose_b:
            # MLX stores a quantized weight n x k, grouped along k; no kernel reads it otherwise.
            raise SpecError("field 'quant': quantized weights are stored n x k, as MLX stores them; "
                            "set transpose_b = true")
        try:
            q.check_k(self.k)
        except ValueError as e:
            raise SpecError(f"field 'quant': {e}") from None

    @property
    def q(self) -> quantfmt.Quant | None:
        """B's quantization format, or None."""
        return quantfmt.parse(self.quant) if self.quant is not None else None

    @property
    def bias(self) -> bool:
        """Whether the op adds a bias vector of n elements."""
        return self.op == "matmul_bias_add"

    @property
    def shape_a(self) -> tuple[int, int, int]:
        """A as stored: (batch, k, m) when transposed, else (batch, m, k)."""
        return (self.batch, self.k, self.m) if self.transpose_a else (self.batch, self.m, self.k)

    @property
    def shape_b(self) -> tuple[int, int, int]:
        """B as stored: (batch, n, k) when transposed, else (batch, k, n)."""
        return (self.batch, self.n, self.k) if self.transpose_b else (self.batch, self.k, self.n)

    @property
    def shape_c(self) -> tuple[int, int, int]:
        """C: (batch, m, n)."""
        return (self.batch, self.m, self.n)

    @property
    def layout(self) -> str:
        """BLAS-style letters for A and B: n as is, t transposed ("nt": B stored n x k)."""
        return ("t" if self.transpose_a else "n") + ("t" if self.transpose_b else "n")

    def key(self) -> str:
        """Canonical identity of everything that changes the result (not `orig`); stable across versions."""
        key = f"{self.op}/{self.dtype}/{self.batch}x{self.m}x{self.n}x{self.k}/{self.layout}"
        if self.op == "matmul_alpha_beta":
            # repr() of a float is its shortest round-trip spelling: the same on every machine.
            key += f"/alpha={self.alpha!r}/beta={self.beta!r}"
        if self.quant is not None:
            key += f"/quant={self.quant}"
        return key

    def label(self) -> str:
        """Short human label: op, [batch x] m x n x k, layout, alpha/beta, dtype when not float16."""
        dims = f"{self.m}x{self.n}x{self.k}"
        if self.batch > 1:
            dims = f"{self.batch}x{dims}"
        text = f"{SHORT_OPS[self.op]} {dims} {self.layout}"
        if self.op == "matmul_alpha_beta":
            text += f" a={self.alpha:g} b={self.beta:g}"
        if self.dtype != "float16":
            text += f" {self.dtype}"
        if self.quant is not None:
            text += f" {self.quant}"
        return text

    def fields(self) -> dict[str, object]:
        """The names manifest expressions know (kernels/README.md)."""
        return {
            "op": self.op, "dtype": self.dtype, "batch": self.batch, "m": self.m, "n": self.n, "k": self.k,
            "transpose_a": self.transpose_a, "transpose_b": self.transpose_b, "alpha": self.alpha,
            "beta": self.beta, "bias": self.bias,
            # B's quantization: "" / 0 / 0 when B is in the dtype.
            "quant": self.quant or "", "qbits": self.q.bits if self.q else 0, "qgroup": self.q.group if self.q else 0,
        }

    def b_layout(self) -> quantfmt.BLayout | None:
        """Where a quantized B's codes, scales and biases lie in its buffer; None unquantized."""
        q = self.q
        return None if q is None else quantfmt.b_layout(q, self.batch, self.n, self.k, DTYPES[self.dtype].itemsize)

    def params(self) -> bytes:
        """The MBParams of kernels/include/common.h for this spec, little endian."""
        values = self.param_values()
        return _PARAMS.pack(*(values[name] for name, _ in PARAMS_FIELDS))

    def param_values(self) -> dict[str, int | float]:
        """The fields of params() by name, before packing."""
        q, layout = self.q, self.b_layout()
        values = {
            "batch": self.batch, "m": self.m, "n": self.n, "k": self.k,
            "lda": self.shape_a[2], "ldb": self.shape_b[2], "ldc": self.shape_c[2],  # row pitch as stored
            "stride_a": self.m * self.k, "stride_b": self.k * self.n, "stride_c": self.m * self.n,  # contiguous
            "trans_a": int(self.transpose_a), "trans_b": int(self.transpose_b), "op": OPS.index(self.op),
            "alpha": self.alpha, "beta": self.beta,
            "qbits": 0, "qgroup": 0, "qscales": 0, "qbiases": 0,
            "reserved": 0,
        }
        if q is not None and layout is not None:
            # B's pitches count uint32 words of codes; scales and biases lie after them.
            words = q.words(self.k)
            values.update(ldb=words, stride_b=self.n * words, qbits=q.bits, qgroup=q.group,
                          qscales=layout.scales, qbiases=layout.biases)
        return values

    def b_bytes(self) -> int:
        """B's bytes as stored: its elements, or, quantized, its codes (k * bits / 8 bytes a
        row) and a scale and a bias per group in the dtype."""
        layout = self.b_layout()
        if layout is None:
            return math.prod(self.shape_b) * DTYPES[self.dtype].itemsize
        return layout.codes_bytes + 2 * layout.count * DTYPES[self.dtype].itemsize

    def bytes_moved(self) -> int:
        """The least DRAM traffic the op can cost: A and B read, C written (and read), bias read."""
        elements = math.prod(self.shape_a) + math.prod(self.shape_c)
        if self.op == "matmul_alpha_beta" and self.beta != 0:
            elements += math.prod(self.shape_c)
        if self.bias:
            elements += self.n
        return elements * DTYPES[self.dtype].itemsize + self.b_bytes()

    def bytes_read(self) -> int:
        """What one launch must read: A, B, the bias, and C where beta != 0 reads it."""
        elements = math.prod(self.shape_a) + (self.n if self.bias else 0)
        if self.op == "matmul_alpha_beta" and self.beta != 0:
            elements += math.prod(self.shape_c)
        return elements * DTYPES[self.dtype].itemsize + self.b_bytes()

    def flops(self) -> int:
        """Multiply-adds counted as two."""
        return 2 * self.batch * self.m * self.n * self.k


def spec_from_key(key: str) -> Spec:
    """The spec whose key() is `key` (without `orig`, which keys leave out); SpecError if
    `key` is not one. Stored runs keep their specs as keys, and reports need the shapes."""
    parts = key.split("/")
    try:
        op, dtype, dims, layout = parts[:4]
        batch, m, n, k = (int(x) for x in dims.split("x"))
        extra = dict(p.split("=", 1) for p in parts[4:])
        if len(layout) != 2 or set(layout) - {"n", "t"} or set(extra) - {"alpha", "beta", "quant"}:
            raise ValueError
        alpha, beta = float(extra.get("alpha", 1.0)), float(extra.get("beta", 0.0))
    except ValueError:
        raise SpecError(f"{key!r} is not a spec key (op/dtype/BxMxNxK/layout[/alpha=A/beta=B][/quant=Q])") from None
    spec = Spec(op, dtype, batch, m, n, k, layout[0] == "t", layout[1] == "t", alpha, beta, quant=extra.get("quant"))
    if spec.key() != key:
        raise SpecError(f"{key!r} is not a spec key in canonical form (that spec's key is {spec.key()!r})")
    return spec


@dataclass(frozen=True)
class Suite:
    """A named, ordered list of specs, as loaded from `path`."""

    name: str
    description: str
    specs: tuple[Spec, ...]
    path: Path


# What a suite file may say. Top-level defaults apply to every [[spec]] that does
# not set the field itself.
_DEFAULTS = ("dtype", "op", "batch", "transpose_a", "transpose_b", "alpha", "beta", "quant")
_TOP_KEYS = ("name", "description", "orig_device", *_DEFAULTS, "spec")
_SPEC_KEYS = ("op", "dtype", "batch", "m", "n", "k", "transpose_a", "transpose_b", "alpha", "beta", "quant", "orig")
_ORIG_KEYS = ("impl", "ms", "device")
_VALIDATE = {
    "op": lambda v: _choice(v, "op", OPS),
    "dtype": lambda v: _choice(v, "dtype", DTYPES),
    "batch": lambda v: _count(v, "batch"),
    "transpose_a": lambda v: _flag(v, "transpose_a"),
    "transpose_b": lambda v: _flag(v, "transpose_b"),
    "alpha": lambda v: _scalar(v, "alpha"),
    "beta": lambda v: _scalar(v, "beta"),
    "quant": lambda v: _quant_field(v),
}


def _quant_field(value: object) -> str:
    """A suite's `quant`: the format's name, which applies to B. The table form names the
    operand, so that `quant = { a = ... }` is refused with the reason rather than misread."""
    if isinstance(value, dict):
        if "a" in value:
            raise SpecError("field 'quant.a': only B, the weights, can be quantized (MLX quantizes weights, not "
                            "activations); write quant = \"affine-q4-g64\" or quant = { b = \"affine-q4-g64\" }")
        if set(value) != {"b"}:
            raise SpecError(f"field 'quant': a table must hold only 'b', got {', '.join(map(str, value))}")
        value = value["b"]
    try:
        return quantfmt.parse(value).name
    except ValueError as e:
        raise SpecError(f"field 'quant': {e}") from None


def _unknown(key: str, known: tuple[str, ...], prefix: str = "") -> str:
    guess = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{prefix}{guess[0]}'?" if guess else f"known: {', '.join(known)}"
    return f"field '{prefix}{key}': unknown ({hint})"


def builtin_suites() -> list[str]:
    """Names of the suites shipped in metalbench/suites/."""
    return sorted(p.stem for p in _SUITES.glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, str) and name_or_path in builtin_suites():
        return _SUITES / f"{name_or_path}.toml"
    path = Path(name_or_path)
    if path.is_file():
        return path
    # Built-in names contain dots ("qwen2.5-0.5b-decode"), so only a separator or a
    # .toml suffix marks something meant as a path.
    if isinstance(name_or_path, Path) or path.suffix == ".toml" or len(path.parts) > 1:
        raise SuiteError(f"{path}: no such suite file")
    raise SuiteError(f"no built-in suite named {str(name_or_path)!r} (built-in: {', '.join(builtin_suites())}); "
                     "give a path to use a suite file")


def _parse_orig(value: object, device: str | None) -> Orig:
    if not isinstance(value, dict):
        raise SpecError(f"field 'orig': must be a table like {{ impl = \"mps\", ms = 0.3 }}, got {_show(value)}")
    for key in value:
        if key not in _ORIG_KEYS:
            raise SpecError(_unknown(key, _ORIG_KEYS, "orig."))
    for key in ("impl", "ms"):
        if key not in value:
            raise SpecError(f"field 'orig.{key}': missing")
    dev = value.get("device", device)
    if dev is None:
        raise SpecError("field 'orig.device': missing; set it here or as the suite's top-level orig_device")
    return Orig(value["impl"], value["ms"], dev)


def _parse_spec(table: object, defaults: dict[str, object], device: str | None) -> Spec:
    if not isinstance(table, dict):
        raise SpecError(f"must be a table, got {_show(table)}")
    for key in table:
        if key not in _SPEC_KEYS:
            raise SpecError(_unknown(key, _SPEC_KEYS))
    values = {"batch": 1, "dtype": "float16", **defaults, **{k: v for k, v in table.items() if k != "orig"}}
    if "quant" in table:
        values["quant"] = _quant_field(table["quant"])
    for key in ("op", "m", "n", "k"):
        if key not in values:
            where = "set it here or as a top-level default" if key in _DEFAULTS else "every spec needs it"
            raise SpecError(f"field '{key}': missing ({where})")
    orig = _parse_orig(table["orig"], device) if "orig" in table else None
    return Spec(**values, orig=orig)  # type: ignore[arg-type]


def _parse(path: Path, data: dict[str, object]) -> Suite:
    for key in data:
        if key not in _TOP_KEYS:
            raise SuiteError(f"{path}: top level: {_unknown(key, _TOP_KEYS)}")
    name = data.get("name", path.stem)
    description = data.get("description", "")
    device = data.get("orig_device")
    for key, value in (("name", name), ("description", description), ("orig_device", device)):
        if value is not None and not isinstance(value, str):
            raise SuiteError(f"{path}: top level: field '{key}': must be a string, got {_show(value)}")
    if not name:
        raise SuiteError(f"{path}: top level: field 'name': must not be empty")
    defaults: dict[str, object] = {}
    for key in _DEFAULTS:
        if key in data:
            try:
                defaults[key] = _VALIDATE[key](data[key])
            except SpecError as e:
                raise SuiteError(f"{path}: top level: {e}") from None
    tables = data.get("spec")
    if isinstance(tables, dict):
        raise SuiteError(f"{path}: field 'spec': write [[spec]] (an array of tables), not [spec]")
    if not isinstance(tables, list) or not tables:
        raise SuiteError(f"{path}: no [[spec]] tables")
    specs = []
    for index, table in enumerate(tables):
        try:
            specs.append(_parse_spec(table, defaults, device))  # type: ignore[arg-type]
        except SpecError as e:
            raise SuiteError(f"{path}: spec {index}: {e}") from None
    return Suite(name=str(name), description=str(description), specs=tuple(specs), path=path)


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name, or a suite file by path (format: the comment atop suites/smoke.toml)."""
    path = _resolve(name_or_path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SuiteError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line L, column C)".
        raise SuiteError(f"{path}: TOML syntax error: {e}") from None
    return _parse(path, data)
