"""Deterministic inputs and the float64 reference, cached on disk with a checksum."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths
from .specs import DTYPES, Spec

__all__ = ["Inputs", "Reference", "ReferenceCache", "compute_reference", "make_inputs", "seed_of"]

# Part of every cache key: bump when the inputs' generator or the reference's
# algorithm changes, so that no entry made the old way is ever used.
VERSION = 1
# Columns of B converted to float64 at a time: bounds the LM head's reference
# (151936 x 896) to ~120 MB of temporaries instead of a 1 GB float64 copy of B.
_CHUNK = 16384


@dataclass(frozen=True)
class Inputs:
    a: np.ndarray
    b: np.ndarray
    bias: np.ndarray | None  # (n,) for matmul_bias_add
    c: np.ndarray | None  # (batch, m, n): C before the op, for matmul_alpha_beta


@dataclass(frozen=True)
class Reference:
    out: np.ndarray  # (batch, m, n) float64
    mag: np.ndarray  # (batch, m, n) float64: sum of |terms|, the scale rounding errors are relative to


def seed_of(spec: Spec) -> int:
    """The same seed for the same spec on every machine (unlike hash(), which is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"metalbench-inputs-v{VERSION}:{spec.key()}".encode()).digest()[:8], "little")


def make_inputs(spec: Spec) -> Inputs:
    """Uniform in [-1, 1), drawn in float32 (half the memory of float64), rounded to the spec's dtype."""
    rng = np.random.Generator(np.random.PCG64(seed_of(spec)))
    dtype = DTYPES[spec.dtype]

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.random(shape, dtype=np.float32)
        x *= 2
        x -= 1
        return x.astype(dtype, copy=False)

    a, b = draw(spec.shape_a), draw(spec.shape_b)
    bias = draw((spec.n,)) if spec.bias else None
    c = draw(spec.shape_c) if spec.op == "matmul_alpha_beta" else None
    return Inputs(a, b, bias, c)


def compute_reference(spec: Spec, inputs: Inputs) -> Reference:
    """The op in float64 from the rounded inputs, with |terms| summed alongside for error bounds."""
    a = inputs.a.astype(np.float64)
    if spec.transpose_a:
        a = a.transpose(0, 2, 1)
    out = np.empty(spec.shape_c, dtype=np.float64)
    mag = np.empty(spec.shape_c, dtype=np.float64)
    abs_a = np.abs(a)
    for start in range(0, spec.n, _CHUNK):
        stop = min(start + _CHUNK, spec.n)
        b = inputs.b[:, start:stop, :] if spec.transpose_b else inputs.b[:, :, start:stop]
        b = b.astype(np.float64)
        if spec.transpose_b:
            b = b.transpose(0, 2, 1)
        out[:, :, start:stop] = a @ b
        mag[:, :, start:stop] = abs_a @ np.abs(b)
    if spec.op == "matmul_bias_add":
        bias = inputs.bias.astype(np.float64)  # type: ignore[union-attr]
        out += bias
        mag += np.abs(bias)
    elif spec.op == "matmul_alpha_beta":
        out *= spec.alpha
        mag *= abs(spec.alpha)
        if spec.beta != 0:
            c = inputs.c.astype(np.float64)  # type: ignore[union-attr]
            out += spec.beta * c
            mag += abs(spec.beta) * np.abs(c)
    return Reference(out, mag)


def _checksum(out: np.ndarray, mag: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(out).data)
    h.update(np.ascontiguousarray(mag).data)
    return h.hexdigest()


class ReferenceCache:
    """Content-addressed entries: the name is the hash of what determines the data.

    Each entry stores its key and a checksum of its arrays; an entry that fails
    either check, or cannot be read at all, is recomputed and rewritten, never used.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir() / "references"

    def _identity(self, spec: Spec) -> str:
        return f"v{VERSION}:{seed_of(spec)}:{spec.key()}"

    def path_for(self, spec: Spec) -> Path:
        digest = hashlib.sha256(self._identity(spec).encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, spec: Spec, inputs: Inputs) -> tuple[Reference, str]:
        """The reference and how it was had: "cached", "computed" or "recomputed: <what was wrong>"."""
        path = self.path_for(spec)
        status = "computed"
        if path.exists():
            found, problem = self._load(path, spec)
            if found is not None:
                return found, "cached"
            status = f"recomputed: {path.name} was damaged ({problem})"
        ref = compute_reference(spec, inputs)
        self._store(path, spec, ref)
        return ref, status

    def _load(self, path: Path, spec: Spec) -> tuple[Reference | None, str]:
        try:
            with np.load(path, allow_pickle=False) as data:
                key = str(data["key"])
                checksum = str(data["checksum"])
                out, mag = data["out"], data["mag"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            return None, f"unreadable: {type(e).__name__}: {e}"
        if key != self._identity(spec):
            return None, "it holds another spec's reference"
        if out.shape != spec.shape_c or mag.shape != spec.shape_c:
            return None, f"shape {out.shape} instead of {spec.shape_c}"
        if _checksum(out, mag) != checksum:
            return None, "checksum mismatch"
        return Reference(out, mag), ""

    def _store(self, path: Path, spec: Spec, ref: Reference) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed into place: an interrupted write never leaves a
        # half entry under the real name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(self._identity(spec)), checksum=np.array(_checksum(ref.out, ref.mag)),
                         out=ref.out, mag=ref.mag)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
