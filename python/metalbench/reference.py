"""Inputs and the float64 reference: the base inputs of a spec, deterministic and cached on
disk with a checksum, and per run the copies of A that no kernel can know in advance.

The base inputs come from a seed derived from the spec's key, so their reference can be
cached and every machine sees the same numbers. A kernel could ship that answer, though,
so the launches a run verifies do not read them: each copy of A (one per output slot,
measure.py) is the base A with FRESH_PER_ROW elements of every row drawn afresh from the
run's own seed (`fresh_copy`). A copy's reference is the base reference plus a rank-t
update (`reference_at`), computed only at the elements that are verified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths
from .chunks import chunked
from .dtypes import DTYPES, round_from, to_float64
from .quant import QuantWeights, dequantize, quantize
from .specs import Spec

__all__ = ["FRESH_PER_ROW", "VERSION", "Fresh", "Inputs", "Reference", "ReferenceCache", "compute_reference",
           "fresh_copies", "make_inputs", "reference_at", "seed_of"]

# Part of every seed and cache entry name: bump it whenever the inputs' generator or
# the reference's algorithm changes, so nothing made the old way is ever used again.
VERSION = 1
# Elements drawn per step: bounds the float32 scratch of make_inputs to 16 MB. The
# generator's stream does not depend on it (numpy fills arrays from one stream).
_DRAW_CHUNK = 1 << 22
# float64 elements of B converted per step of compute_reference: the LM head
# (151936 x 896) costs a 32 MB temporary instead of a 1.1 GB float64 copy of B.
_REF_CHUNK = 1 << 22
_MAGIC = f"metalbench-reference v{VERSION} sha256=".encode()
# Elements of every row of A that a copy draws afresh: each output element of a copy then
# differs from the base answer (and from another copy's) by a sum of t products of
# U(-1, 1) values, typically ~1, hundreds of times what the tolerance allows; few enough
# that a copy's reference is a cheap update of the base one (t multiply-adds an element).
FRESH_PER_ROW = 4
# Output elements whose copy reference is computed per step: bounds the temporaries.
_AT_CHUNK = 1 << 18
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Inputs:
    """A, B as stored (spec.shape_a, spec.shape_b), bias (n,) or None, and C before the op.

    `c` is set for matmul_alpha_beta, also when beta == 0, so the runner can choose.
    For a quantized spec, `q` is B as the kernels get it (codes, scales, biases: quant.py)
    and `b` is its dequantized value in float64, (batch, n, k): what the reference
    multiplies by.
    """

    a: np.ndarray
    b: np.ndarray
    bias: np.ndarray | None
    c: np.ndarray | None
    q: QuantWeights | None = None


@dataclass(frozen=True)
class Reference:
    """The op in float64 and `mag` = |alpha| (|A| @ |B|) + |beta| |C| + |bias|, both (batch, m, n).

    `mag` is the sum of the magnitudes of every term of an output element: the scale
    that a correct kernel's rounding errors are bounded by (metrics.tolerance).
    `epilogue` is the part of `mag` from the epilogue's operands, |beta| |C| + |bias|
    (zeros for matmul and beta == 0), broadcast to (batch, m, n); None when unknown,
    which metrics.check reads as all of `mag`.
    """

    out: np.ndarray
    mag: np.ndarray
    epilogue: np.ndarray | None = None


def seed_of(spec: Spec) -> int:
    """A 64-bit seed from sha256 of the spec's key: the same on every machine (hash() is salted)."""
    digest = hashlib.sha256(f"metalbench inputs v{VERSION}\n{spec.key()}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def make_inputs(spec: Spec) -> Inputs:
    """U(-1, 1) drawn in float32 from PCG64(seed_of(spec)), rounded to the spec's dtype.

    Drawn in chunks straight into arrays of the final dtype, so the LM head's B
    (272 MB of fp16) never has a full-size float32 or float64 twin. Drawn in the
    order A, B, bias, C.
    """
    rng = np.random.Generator(np.random.PCG64(seed_of(spec)))
    dtype = DTYPES[spec.dtype]

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        flat = out.reshape(-1)
        for start in range(0, flat.size, _DRAW_CHUNK):
            x = rng.random(min(_DRAW_CHUNK, flat.size - start), dtype=np.float32)
            x *= 2  # exact, and so is the -1 below: [0, 1) multiples of 2^-24 map onto [-1, 1)
            x -= 1
            flat[start:start + x.size] = round_from(x, spec.dtype)  # to nearest even
        return out

    a, b = draw(spec.shape_a), draw(spec.shape_b)
    bias = draw((spec.n,)) if spec.bias else None
    c = draw(spec.shape_c) if spec.op == "matmul_alpha_beta" else None
    if spec.q is not None:
        # The weights drawn as for a plain spec, then quantized as mx.quantize would.
        q = quantize(b, spec.q, spec.dtype)
        return Inputs(a, dequantize(q), bias, c, q)
    return Inputs(a, b, bias, c)


def _draw_uniform(rng: np.random.Generator, count: int, dtype: str) -> np.ndarray:
    """U(-1, 1) values drawn as make_inputs draws them, rounded to `dtype` (stored as DTYPES[dtype])."""
    x = rng.random(count, dtype=np.float32)
    x *= 2
    x -= 1
    return round_from(x, dtype)


@dataclass(frozen=True)
class Fresh:
    """What each copy of A changed from the base A, copy by copy.

    In logical row r of batch entry b (A as m x k, whatever its layout), copy c holds
    new[c, b, r, i] at column cols[c, b, r, i] where the base A held old[c, b, r, i]
    (i < t, the columns distinct). Values are float64 of the dtype's numbers.
    """

    cols: np.ndarray  # (copies, batch, m, t) int64
    old: np.ndarray   # (copies, batch, m, t) float64
    new: np.ndarray   # (copies, batch, m, t) float64

    @property
    def copies(self) -> int:
        return int(self.cols.shape[0])


def _distinct_columns(rng: np.random.Generator, shape: tuple[int, ...], k: int, t: int) -> np.ndarray:
    """`t` distinct columns out of k for every entry of `shape`, uniformly: each draw picks
    among the columns not taken yet, shifted past the taken ones in ascending order."""
    taken = np.empty((*shape, 0), dtype=np.int64)
    for i in range(t):
        c = rng.integers(0, k - i, size=shape, dtype=np.int64)
        for j in range(i):  # `taken` is sorted: each taken column at or below c moves c on by one
            c += c >= taken[..., j]
        taken = np.sort(np.concatenate([taken, c[..., None]], axis=-1), axis=-1)
    return rng.permuted(taken, axis=-1)


def fresh_copies(spec: Spec, a: np.ndarray, run_seed: int, copies: int) -> tuple[list[np.ndarray], Fresh]:
    """`copies` copies of the base A (as stored), each with FRESH_PER_ROW elements of every
    row drawn afresh (U(-1, 1), rounded to the dtype) from the run's seed, the spec and the
    copy's index: what copy c holds is known to no kernel before the run starts."""
    batch, m, k = spec.batch, spec.m, spec.k
    t = min(FRESH_PER_ROW, k)
    rows_b, rows_r = np.meshgrid(np.arange(batch), np.arange(m), indexing="ij")
    out, cols, old, new = [], [], [], []
    for copy in range(copies):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([run_seed & _U64, seed_of(spec), copy])))
        where = _distinct_columns(rng, (batch, m), k, t)
        values = _draw_uniform(rng, batch * m * t, spec.dtype).reshape(batch, m, t)
        data = a.copy()
        logical = data.transpose(0, 2, 1) if spec.transpose_a else data  # a view, (batch, m, k)
        b_i, r_i = rows_b[..., None], rows_r[..., None]
        old.append(to_float64(logical[b_i, r_i, where], spec.dtype))
        logical[b_i, r_i, where] = values
        out.append(data)
        cols.append(where)
        new.append(to_float64(values, spec.dtype))
    return out, Fresh(np.stack(cols), np.stack(old), np.stack(new))


def reference_at(spec: Spec, base: Reference, b: np.ndarray, fresh: Fresh, copy: np.ndarray | int,
                 flat: np.ndarray) -> Reference:
    """The reference of copy `copy` of A (fresh_copies) at output elements `flat` (indices
    into C flattened; `copy` one copy or one per element), as 1-d arrays: the base reference
    there plus alpha sum_i (new_i - old_i) B[col_i, j] (and the magnitudes likewise). `b` is
    B as stored."""
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    copy = np.broadcast_to(np.asarray(copy, dtype=np.int64), flat.shape)
    alpha = _as_f32(spec.alpha) if spec.op == "matmul_alpha_beta" else 1.0
    base_out, base_mag = base.out.reshape(-1), base.mag.reshape(-1)
    out = np.empty(flat.size, dtype=np.float64)
    mag = np.empty(flat.size, dtype=np.float64)

    def part(s: int, e: int) -> None:
        f, c = flat[s:e], copy[s:e]
        bi, r, j = np.unravel_index(f, spec.shape_c)
        cols = fresh.cols[c, bi, r]  # (N, t)
        rows_b, rows_j = bi[:, None], j[:, None]
        bv = to_float64(b[rows_b, rows_j, cols] if spec.transpose_b else b[rows_b, cols, rows_j], spec.dtype)
        new, old = fresh.new[c, bi, r], fresh.old[c, bi, r]
        out[s:e] = base_out[f] + alpha * np.einsum("ij,ij->i", new - old, bv)
        mag[s:e] = base_mag[f] + abs(alpha) * np.einsum("ij,ij->i", np.abs(new) - np.abs(old), np.abs(bv))

    chunked(part, flat.size, _AT_CHUNK)
    epilogue = None if base.epilogue is None else np.broadcast_to(base.epilogue, spec.shape_c).reshape(-1)[flat]
    return Reference(out, mag, epilogue)


def _as_f32(x: float) -> float:
    # Kernels get alpha and beta as float32 (MBParams); the reference uses the same values.
    return float(np.float32(x))


def compute_reference(spec: Spec, inputs: Inputs) -> Reference:
    """The op computed in float64 from the rounded inputs, chunked over n to bound memory."""
    a = to_float64(inputs.a, spec.dtype)
    if spec.transpose_a:
        a = a.transpose(0, 2, 1)
    abs_a = np.abs(a)
    out = np.empty(spec.shape_c, dtype=np.float64)
    mag = np.empty(spec.shape_c, dtype=np.float64)
    step = max(1, _REF_CHUNK // (spec.batch * spec.k))
    for start in range(0, spec.n, step):
        stop = min(start + step, spec.n)
        if spec.transpose_b:
            b = to_float64(inputs.b[:, start:stop, :], spec.dtype).transpose(0, 2, 1)
        else:
            b = to_float64(inputs.b[:, :, start:stop], spec.dtype)
        np.matmul(a, b, out=out[:, :, start:stop])
        np.abs(b, out=b)
        np.matmul(abs_a, b, out=mag[:, :, start:stop])
    if spec.op == "matmul_bias_add":
        if inputs.bias is None:
            raise ValueError(f"{spec.label()}: inputs have no bias")
        out += to_float64(inputs.bias, spec.dtype)
    elif spec.op == "matmul_alpha_beta":
        alpha, beta = _as_f32(spec.alpha), _as_f32(spec.beta)
        out *= alpha
        mag *= abs(alpha)
        if beta != 0:
            if inputs.c is None:
                raise ValueError(f"{spec.label()}: inputs have no C, and beta != 0 reads it")
            out += beta * to_float64(inputs.c, spec.dtype)
    epilogue = _epilogue(spec, inputs)
    mag += epilogue
    return Reference(out, mag, epilogue)


def _epilogue(spec: Spec, inputs: Inputs) -> np.ndarray:
    """|beta| |C| + |bias| per output element: cheap, so cache entries need not store it."""
    if spec.op == "matmul_bias_add" and inputs.bias is not None:
        return np.broadcast_to(np.abs(to_float64(inputs.bias, spec.dtype)), spec.shape_c)
    beta = _as_f32(spec.beta)
    if spec.op == "matmul_alpha_beta" and beta != 0 and inputs.c is not None:
        return abs(beta) * np.abs(to_float64(inputs.c, spec.dtype))
    return np.broadcast_to(np.float64(0.0), spec.shape_c)


def _fingerprint(inputs: Inputs) -> str:
    """A cheap digest of the inputs (dtypes, shapes, a strided sample of each).

    numpy does not promise Generator streams stay the same across versions; if they
    change, entries made from the old numbers must not be used with the new ones.
    """
    h = hashlib.sha256()
    for name in ("a", "b", "bias", "c"):
        x = getattr(inputs, name)
        h.update(name.encode())
        if x is None:
            continue
        flat = np.ascontiguousarray(x).reshape(-1)
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(flat[:: max(1, flat.size // 4096)].tobytes())
        h.update(flat[-64:].tobytes())
    return h.hexdigest()


class ReferenceCache:
    """References on disk, content-addressed and checksummed.

    An entry's name is a hash of what determines its content (spec key, seed,
    VERSION, a fingerprint of the inputs). The file is one header line,
    `metalbench-reference v1 sha256=<hex>`, then an uncompressed npz of out, mag and
    that identity; the sha256 covers every byte after the header, so any damage
    anywhere is caught, not only damage in the parts a zip reader checks. An entry
    that fails any check is recomputed and rewritten, never used, and the status
    string says what was wrong.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir() / "references"

    def _identity(self, spec: Spec, inputs: Inputs) -> str:
        return f"metalbench reference v{VERSION}\nseed {seed_of(spec)}\ninputs {_fingerprint(inputs)}\n{spec.key()}"

    def path_for(self, spec: Spec, inputs: Inputs) -> Path:
        """Where the entry for (spec, inputs) lives."""
        digest = hashlib.sha256(self._identity(spec, inputs).encode()).hexdigest()
        return self.root / f"{digest[:32]}.ref"

    def get(self, spec: Spec, inputs: Inputs) -> tuple[Reference, str]:
        """The reference and how it was had: "cached", "computed" or "recomputed: <what was wrong>".

        `inputs` must be make_inputs(spec) (or the same numbers). Never raises for a
        damaged entry; a failure to write the entry is appended to the status.
        """
        identity = self._identity(spec, inputs)
        path = self.path_for(spec, inputs)
        status = "computed"
        if path.exists():
            found, problem = self._load(path, spec, identity)
            if found is not None:
                return Reference(found.out, found.mag, _epilogue(spec, inputs)), "cached"
            status = f"recomputed: the cached entry {path.name} {problem}"
        ref = compute_reference(spec, inputs)
        try:
            self._store(path, identity, ref)
        except OSError as e:
            # The reference is right whether or not it could be kept.
            status += f" (not stored: {e})"
        return ref, status

    def _load(self, path: Path, spec: Spec, identity: str) -> tuple[Reference | None, str]:
        try:
            data = path.read_bytes()
        except OSError as e:
            return None, f"could not be read ({e})"
        header, _, payload = data.partition(b"\n")
        if not header.startswith(_MAGIC):
            return None, "is not a reference entry (bad header)"
        if header[len(_MAGIC):] != hashlib.sha256(payload).hexdigest().encode():
            return None, "failed its checksum"
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                out, mag = z["out"], z["mag"]
        except Exception as e:  # noqa: BLE001 - past the checksum only a writer's bug can get here
            return None, f"could not be read ({type(e).__name__}: {e})"
        if not isinstance(meta, dict) or meta.get("identity") != identity:
            return None, "belongs to another spec or inputs"
        for name, x in (("out", out), ("mag", mag)):
            if x.dtype != np.float64 or x.shape != spec.shape_c:
                return None, f"has {name} of {x.dtype} {x.shape}, not float64 {spec.shape_c}"
        return Reference(out, mag), ""  # get() adds the epilogue

    def _store(self, path: Path, identity: str, ref: Reference) -> None:
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps({"identity": identity})), out=ref.out, mag=ref.mag)
        payload = buf.getvalue()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed over the real name: an interrupted write leaves at
        # most a stray temp file, never a half entry, and readers never see one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".ref")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
