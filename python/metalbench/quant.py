"""Quantized weights in MLX's affine format: the format's names, quantizing, packing and
dequantizing, in numpy.

A spec whose `quant` is "affine-q4-g64" has B (stored n x k, the weight layout) held as
MLX holds a quantized linear layer's weight (mlx.core.quantize, mode "affine"):

- every run of `group` consecutive values along k shares a scale and a bias, and each
  value is a `bits`-bit code q with w = scale * q + bias;
- the codes of a row form a little-endian bit stream along k (code j occupies bits
  j * bits .. (j + 1) * bits - 1 of the row, bit 0 being the lowest bit of the row's
  first byte), stored as uint32 words: k * bits / 32 words per row. A 3-, 5- or 6-bit
  code can straddle two words;
- scales and biases are in the activations' dtype, n x (k / group) each.

The quantizer is MLX's rule, in float32 (MLX's CPU backend, mlx/backend/cpu/quantized.cpp,
and the fallback in mlx/ops.cpp `affine_quantize`): per group, scale = max((max - min) /
(2**bits - 1), 1e-7), negated when max is the larger in magnitude; the value of larger
magnitude (the "edge") is made exact: q0 = rint(edge / scale), and where q0 != 0,
scale = edge / q0 and bias = edge, else bias = 0; codes are rint((w - bias) / scale)
clipped to 0 .. 2**bits - 1; scales and biases are then rounded to the dtype.
tests/test_quant.py checks every bit width and group size against mlx.core, both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .dtypes import DTYPES, round_from, to_float64
from .errors import InputError

__all__ = ["BITS", "GROUPS", "BLayout", "Quant", "QuantError", "QuantWeights", "b_buffer", "b_layout", "dequantize",
           "pack", "parse", "quantize", "unpack"]

# MLX's sets for mode "affine" (mlx.core.quantize's table of modes), less 1 bit: MLX 0.32 added it
# with a rule of its own, which this module does not follow (README, "Where metalbench differs from MLX").
BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
GROUPS: tuple[int, ...] = (32, 64, 128)
_NAME = re.compile(r"affine-q(\d+)-g(\d+)")
_EPS = np.float32(1e-7)
# Where the scales and the biases start in B's buffer is rounded up to this many bytes, so
# that a kernel may read them with 16-byte vector loads.
_ALIGN = 16
# Rows packed or unpacked per step: bounds the one-byte-per-bit scratch to ~64 MB.
_ROW_BITS = 1 << 26


class QuantError(InputError, ValueError):
    """Quantized arrays that do not fit together (QuantWeights.check); the message names the array."""


@dataclass(frozen=True)
class Quant:
    """One quantization format: MLX affine, `bits` per code, a scale and bias per `group`."""

    bits: int
    group: int

    @property
    def name(self) -> str:
        return f"affine-q{self.bits}-g{self.group}"

    def words(self, k: int) -> int:
        """uint32 words of one row of k codes."""
        return k * self.bits // 32

    def check_k(self, k: int) -> None:
        """ValueError unless rows of k values split into whole groups (which also makes a row
        a whole number of words: every group size is a multiple of 32)."""
        if k % self.group:
            raise ValueError(f"group size {self.group} does not divide k = {k}; k must be a multiple of it")


def parse(text: object) -> Quant:
    """The format named `text` ("affine-q4-g64"); ValueError naming what is allowed."""
    allowed = f"affine-q<bits>-g<group> with bits in {', '.join(map(str, BITS))} and group in " \
              f"{', '.join(map(str, GROUPS))} (MLX's affine quantization)"
    match = _NAME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"must be {allowed}, got {text!r}")
    bits, group = int(match[1]), int(match[2])
    if bits not in BITS:
        raise ValueError(f"bit width {bits} is not one of MLX's; must be {allowed}, got {text!r}")
    if group not in GROUPS:
        raise ValueError(f"group size {group} is not one of MLX's; must be {allowed}, got {text!r}")
    return Quant(bits, group)


@dataclass(frozen=True)
class QuantWeights:
    """A quantized matrix as MLX stores it: codes (rows, words) uint32, scales and biases
    (rows, k / group) in the dtype. Leading batch dimensions are allowed on all three."""

    quant: Quant
    codes: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    # The scales' and biases' dtype by name; None: numpy's float16 or float32, as the arrays
    # say. bfloat16 must be named, its arrays being uint16 bit patterns (dtypes.py).
    dtype: str | None = None

    @property
    def k(self) -> int:
        return self.codes.shape[-1] * 32 // self.quant.bits

    def check(self) -> None:
        """QuantError naming the array whose shape or type does not fit the others: arrays a
        user brings (an MLX checkpoint's weight, scales and biases) are checked here."""
        q, codes = self.quant, self.codes
        if codes.dtype != np.uint32:
            raise QuantError(f"codes: must be uint32 (MLX packs codes into uint32 words), got {codes.dtype}")
        if (codes.shape[-1] * 32) % q.bits:
            raise QuantError(f"codes: {codes.shape[-1]} words per row do not hold a whole number of "
                             f"{q.bits}-bit codes")
        want = (*codes.shape[:-1], self.k // q.group)
        for name in ("scales", "biases"):
            x = getattr(self, name)
            if x.shape != want:
                raise QuantError(f"{name}: shape {tuple(x.shape)} does not fit codes of shape {tuple(codes.shape)} "
                                 f"at {q.name}; must be {want} (one per group of {q.group} along k)")
        if self.scales.dtype != self.biases.dtype:
            raise QuantError(f"biases: dtype {self.biases.dtype} differs from the scales' {self.scales.dtype}")


def dtype_name(x: np.ndarray, dtype: str | None) -> str:
    """The dtype of `x`'s values by name: `dtype` where given, else numpy's float16 or float32."""
    if dtype is not None:
        return dtype
    for name in ("float16", "float32"):
        if x.dtype == DTYPES[name]:
            return name
    raise QuantError(f"values of numpy dtype {x.dtype}: name their dtype (bfloat16 is stored as its uint16 bit "
                     "patterns)")


def quantize(w: np.ndarray, quant: Quant, dtype: str | None = None) -> QuantWeights:
    """`w` (..., k), of `dtype` (dtype_name), quantized by MLX's rule (module docstring), scales
    and biases in that dtype."""
    quant.check_k(w.shape[-1])
    name = dtype_name(w, dtype)
    groups = to_float64(w, name).astype(np.float32).reshape(*w.shape[:-1], w.shape[-1] // quant.group, quant.group)
    n_bins = np.float32((1 << quant.bits) - 1)
    w_max, w_min = groups.max(axis=-1), groups.min(axis=-1)
    low_edge = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, _EPS)
    scale = np.where(low_edge, scale, -scale)
    edge = np.where(low_edge, w_min, w_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        q0 = np.rint(edge / scale)
        exact = q0 != 0
        scale = np.where(exact, edge / q0, scale).astype(np.float32)
    bias = np.where(exact, edge, np.float32(0)).astype(np.float32)
    codes = np.clip(np.rint((groups - bias[..., None]) / scale[..., None]), 0, n_bins).astype(np.uint8)
    return QuantWeights(quant, pack(codes.reshape(w.shape), quant.bits),
                        round_from(scale, name), round_from(bias, name), dtype)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (..., k), each below 2**bits, as the little-endian bit stream of each row in
    uint32 words (..., k * bits / 32)."""
    rows = codes.reshape(-1, codes.shape[-1])
    k = rows.shape[1]
    if (k * bits) % 32:
        raise ValueError(f"{k} codes of {bits} bits do not fill whole 32-bit words")
    out = np.empty((rows.shape[0], k * bits // 8), dtype=np.uint8)
    shifts = np.arange(bits, dtype=np.uint8)
    step = max(1, _ROW_BITS // max(1, k * bits))
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step].astype(np.uint8)
        stream = (chunk[..., None] >> shifts) & 1  # (r, k, bits): bit b of code j is stream bit j * bits + b
        out[start:start + step] = np.packbits(stream.reshape(chunk.shape[0], -1), axis=-1, bitorder="little")
    return out.view("<u4").astype(np.uint32).reshape(*codes.shape[:-1], k * bits // 32)


def unpack(words: np.ndarray, bits: int) -> np.ndarray:
    """The codes (..., words * 32 / bits) as uint8 from rows of uint32 words (pack's inverse)."""
    rows = np.ascontiguousarray(words, dtype="<u4").reshape(-1, words.shape[-1])
    k = rows.shape[1] * 32 // bits
    out = np.empty((rows.shape[0], k), dtype=np.uint8)
    weights = (1 << np.arange(bits)).astype(np.uint8)
    step = max(1, _ROW_BITS // max(1, k * bits))
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step]
        stream = np.unpackbits(chunk.view(np.uint8), axis=-1, bitorder="little")[:, :k * bits]
        out[start:start + step] = (stream.reshape(chunk.shape[0], k, bits) * weights).sum(axis=-1, dtype=np.uint8)
    return out.reshape(*words.shape[:-1], k)


def dequantize(weights: QuantWeights, dtype: np.dtype | type | None = None) -> np.ndarray:
    """w = scale * q + bias for every code, (..., k). In float64 (exact but for the last bit of
    the sum) when `dtype` is None: the reference's weights. Given a dtype, rounded as MLX's
    mx.dequantize rounds on its CPU backend: the product to the dtype, then the sum."""
    weights.check()
    q = weights.quant
    codes = unpack(weights.codes, q.bits)
    shape = (*codes.shape[:-1], codes.shape[-1] // q.group, q.group)
    if dtype is None:
        name = dtype_name(weights.scales, weights.dtype)
        scales, biases = to_float64(weights.scales, name), to_float64(weights.biases, name)
        out = codes.reshape(shape) * scales[..., None] + biases[..., None]
    else:
        dt = np.dtype(dtype)
        product = (codes.reshape(shape).astype(dt) * weights.scales.astype(dt)[..., None]).astype(dt)
        out = (product + weights.biases.astype(dt)[..., None]).astype(dt)
    return out.reshape(codes.shape)


@dataclass(frozen=True)
class BLayout:
    """B's buffer for a quantized spec (kernels/README.md, "Quantized weights"): the codes of
    every batch entry's rows (words of 4 bytes from byte 0), then the scales, then the
    biases, each of those two starting at a multiple of 16 bytes. `scales` and `biases` are
    offsets in elements of the dtype (MBParams qscales and qbiases), `count` how many scales
    (and as many biases) there are, `nbytes` the total."""

    codes_bytes: int
    scales: int
    biases: int
    count: int
    nbytes: int


def b_layout(quant: Quant, batch: int, n: int, k: int, itemsize: int) -> BLayout:
    """Where each part of a quantized B lies in its buffer."""
    codes = batch * n * quant.words(k) * 4
    count = batch * n * (k // quant.group)
    per = count * itemsize

    def up(x: int) -> int:
        return -(-x // _ALIGN) * _ALIGN

    scales = up(codes)
    biases = up(scales + per)
    return BLayout(codes, scales // itemsize, biases // itemsize, count, biases + per)


def b_buffer(weights: QuantWeights, layout: BLayout) -> np.ndarray:
    """The bytes of B's buffer (b_layout) holding `weights`."""
    weights.check()
    item = weights.scales.dtype.itemsize
    out = np.zeros(layout.nbytes, dtype=np.uint8)
    codes = np.ascontiguousarray(weights.codes, dtype="<u4").reshape(-1).view(np.uint8)
    out[:codes.size] = codes
    for offset, part in ((layout.scales, weights.scales), (layout.biases, weights.biases)):
        raw = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        out[offset * item:offset * item + raw.size] = raw
    return out
