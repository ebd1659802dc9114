"""The device buffers of one spec: copies of its inputs, output slots, and guard bands.

Every buffer a kernel is given is a view into an arena: one allocation that holds
its copies one after another, each with a guard band before and after it filled
with a known pattern. A write past either end of a buffer lands in a band and is
found after the launches, on the host for the outputs and on the device (the
`mb_compare` kernel) for the inputs, which must also be left exactly as uploaded.

- B and the bias have `copies` copies: one when warm; in cold mode enough that
  launches rotating through them never find their inputs in the last-level cache.
- A has `a_copies` copies (at least `copies`, and at least two wherever there are two
  slots), each with its own values (reference.fresh_copies): slot s reads copy
  s % a_copies, so neighbouring slots never share their answer.
- Outputs (C) and workspaces have `slots` slots, one per launch of a round, so that
  every launch of a timed round starts from C's initial state (the never-written
  sentinel, or C's input when beta != 0) and a zeroed workspace: the measurement
  loop copies both arenas back from their pristine twins before every round.

The guard pattern is the run's own (`guard_pattern(seed)`): a kernel cannot know what
lies next to its buffers before the run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import _core, paths
from .dtypes import define
from .specs import Spec
from .variants import prelude_source

__all__ = ["Arena", "ColdPlan", "Comparer", "Damage", "SpecBuffers", "guard_bytes", "guard_pattern", "plan_cold"]

# The guard pattern without a run seed (tests, the embedded API): a kernel's own
# arithmetic is unlikely to leave these bytes in this order where it strays.
_PATTERN = np.frombuffer(b"\xa5\x5a\xc3\x3c" * 4, dtype=np.uint8)
# Bytes of the pattern, repeated over every band: divides every device's view alignment
# (256 on each backend), so the pattern's phase at a byte is the byte's offset modulo it.
_PATTERN_BYTES = 16
# Arenas up to this size are built on the host and uploaded in one write; larger
# ones are written band by band and copy by copy, so that the host never holds a
# second copy of a large input.
_HOST_BUILD = 64 << 20
# Grid of the compare kernel: threads per group, uint4s each thread compares (a few, so
# that its reads stay close together, which a CPU driver needs), and at most this many
# groups (enough to fill any GPU; each thread then strides on).
_COMPARE_THREADS = 256
_COMPARE_PER_THREAD = 8
_COMPARE_GROUPS = 65535
# Words the compare kernel takes at once: its count is a 32-bit int (MBParams).
_COMPARE_CHUNK = 1 << 30


def guard_bytes(alignment: int) -> int:
    """Bytes of each guard band: a writer that runs past an end by up to this much
    is caught, and one that runs further still crosses the band on its way."""
    return max(1024, alignment)


def guard_pattern(seed: int | None = None) -> np.ndarray:
    """The _PATTERN_BYTES bytes every guard band repeats: the run's own, drawn from `seed`,
    or a fixed one without. No byte is 0, so a kernel that writes zeros there is seen."""
    if seed is None:
        return _PATTERN
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & ((1 << 64) - 1), 0x9A4D])))
    return rng.integers(1, 256, _PATTERN_BYTES, dtype=np.uint8)


def _pattern(nbytes: int, pattern: np.ndarray = _PATTERN, start: int = 0) -> np.ndarray:
    """The guard pattern over bytes start .. start + nbytes - 1 of an arena (its phase
    follows the byte's offset)."""
    phase = start % pattern.size
    reps = -(-(phase + nbytes) // pattern.size)
    return np.tile(pattern, reps)[phase:phase + nbytes]


@dataclass(frozen=True)
class Damage:
    """What a kernel did to a buffer it must not have changed, in one line."""

    buffer: str
    reason: str


class Arena:
    """`count` copies of `size` bytes in one allocation, each between two guard bands
    holding `pattern` repeated."""

    def __init__(self, device: _core.Device, name: str, size: int, count: int, alignment: int,
                 unit: str = "copy", pattern: np.ndarray = _PATTERN) -> None:
        if alignment % pattern.size:
            raise ValueError(f"view alignment {alignment} is not a multiple of the guard pattern ({pattern.size} "
                             "bytes)")
        self.name, self.size, self.count, self.unit, self.pattern = name, size, count, unit, pattern
        self.guard = guard_bytes(alignment)
        self.stride = -(-(size + self.guard) // alignment) * alignment
        self.total = self.guard + count * self.stride
        self.buffer = device.allocate(self.total)
        self.views = [self.buffer.view(self.offset(i), size) for i in range(count)]

    def offset(self, index: int) -> int:
        """Where copy `index` starts in the arena."""
        return self.guard + index * self.stride

    def write(self, content: np.ndarray | list[np.ndarray]) -> None:
        """Every copy set to `content`, or copy i to content[i] (each at most `size` bytes;
        the rest zero); every band to the pattern."""
        parts = content if isinstance(content, list) else [content]
        if len(parts) not in (1, self.count):
            raise ValueError(f"{len(parts)} contents for {self.count} copies of {self.name}")
        datas = []
        for part in parts:
            raw = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
            if raw.size != self.size:  # shorter: padded with zeros (a copy, only of a short one)
                data = np.zeros(self.size, dtype=np.uint8)
                data[:raw.size] = raw
                raw = data
            datas.append(raw)
        if self.total <= _HOST_BUILD:
            out = _pattern(self.total, self.pattern)
            self.copies_of(out)[:] = np.stack(datas) if len(datas) > 1 else datas[0]
            self.buffer.write(out)
            return
        # The pattern's phase follows the byte's place in the arena.
        band = self._band()
        self.buffer.write(_pattern(self.guard, self.pattern), 0)
        for i in range(self.count):
            self.buffer.write(datas[i % len(datas)], self.offset(i))
            self.buffer.write(band, self.offset(i) + self.size)

    def _band(self) -> np.ndarray:
        """The pattern of the band after a copy (from the copy's end to the next copy)."""
        return _pattern(self.stride - self.size, self.pattern, self.size)

    def copies_of(self, arena: np.ndarray, count: int | None = None) -> np.ndarray:
        """The copies inside host bytes of the arena (or of its first `count` copies), as a (count, size) view."""
        count = self.count if count is None else count
        body = arena[self.guard:self.guard + count * self.stride].reshape(count, self.stride)
        return body[:, :self.size]

    def band_damage(self, arena: np.ndarray, count: int | None = None) -> str | None:
        """How the worst touched guard band was written, from host bytes of the arena (or of
        its first `count` copies and their bands)."""
        count = self.count if count is None else count
        body = arena[self.guard:self.guard + count * self.stride].reshape(count, self.stride)
        after = body[:, self.size:]
        want_after = self._band()
        touched = after != want_after
        if touched.any():
            i, last = np.nonzero(touched)
            worst = int(np.argmax(last))
            return f"wrote {int(last[worst]) + 1} bytes past the end of {self.name}" + \
                (f" ({self.unit} {int(i[worst])})" if count > 1 else "")
        before = arena[:self.guard] != _pattern(self.guard, self.pattern)
        if before.any():
            return f"wrote {self.guard - int(np.argmax(before))} bytes before the start of {self.name}"
        return None

    def read(self, count: int | None = None) -> np.ndarray:
        """Host bytes of the arena, or of its start through copy `count` - 1 and the band after it."""
        size = self.total if count is None else self.guard + count * self.stride
        out = np.empty(size, dtype=np.uint8)
        self.buffer.read(out)
        return out

    def span(self, first: int, count: int) -> tuple[int, int]:
        """Bytes [start, end) of copies first .. first + count - 1, with the band before the
        first and after the last. Starts and ends are multiples of the alignment, so the
        pattern's phase there is the arena's own."""
        return self.offset(first) - self.guard, self.offset(first + count - 1) + self.stride

    def read_run(self, first: int, count: int) -> np.ndarray:
        """Host bytes of span(first, count), laid out as an arena of `count` copies: band_damage
        and copies_of take it with that count."""
        start, end = self.span(first, count)
        out = np.empty(end - start, dtype=np.uint8)
        self.buffer.read(out, start)
        return out


class Comparer:
    """Compares two buffers of one device on the device (kernels/internal/compare.c)."""

    def __init__(self, device: _core.Device, backend: str) -> None:
        body = paths.kernels_dir() / "internal" / "compare.c"
        self.device = device
        self.kernel = device.compile(prelude_source(backend, body), "mb_compare", define("float16"), "internal/compare")
        self.result = device.allocate(4)
        self.dummy = device.allocate(4)
        self._params: dict[int, bytes] = {}  # MBParams for n words

    def equal(self, x: _core.Buffer, y: _core.Buffer) -> bool:
        """Whether `x` and `y` (same size, a whole number of 16-bit words) hold the same bytes."""
        return self.all_equal([(x, y)])

    def all_equal(self, pairs: list[tuple[_core.Buffer, _core.Buffer]]) -> bool:
        """Whether every pair holds the same bytes: one launch per pair (per chunk of a large
        one), all counting into one word that is read once."""
        if not pairs:
            return True
        self.result.fill(0)
        for x, y in pairs:
            words = x.nbytes // 2
            for start in range(0, words, _COMPARE_CHUNK):
                n = min(_COMPARE_CHUNK, words - start)
                xs, ys = (x.view(2 * start, 2 * n), y.view(2 * start, 2 * n)) if words > _COMPARE_CHUNK else (x, y)
                if n not in self._params:
                    self._params[n] = Spec("matmul", "float16", 1, 1, n, 1).params()
                groups = max(1, min(_COMPARE_GROUPS, -(-n // (8 * _COMPARE_THREADS * _COMPARE_PER_THREAD))))
                self.device.run(self.kernel, [xs, ys, self.dummy, self.dummy, self.result, self._params[n]], [groups],
                                [_COMPARE_THREADS])
        found = np.zeros(1, dtype=np.int32)
        self.result.read(found)
        return not found[0]


class SpecBuffers:
    """One spec's arenas on a device, shared by every variant measured on it.

    `copies` copies of B and the bias, one copy of A per entry of `a` (at least `copies`)
    and `slots` output slots (slots >= copies); slot i reads A copy i % len(a) and B
    and bias copy i % copies. Workspaces, whose size depends on the variant, are made
    on demand and kept for the next variant of the same size. Every guard band holds
    `pattern`.
    """

    def __init__(self, device: _core.Device, spec: Spec, a: list[np.ndarray], b: np.ndarray, bias: np.ndarray,
                 c_initial: np.ndarray, copies: int, slots: int, compare: Comparer,
                 pattern: np.ndarray = _PATTERN, evict: int = 0) -> None:
        info = device.info
        if len(a) < copies:
            raise ValueError(f"{len(a)} copies of A for {copies} input copies")
        self.device, self.spec, self.compare, self.pattern = device, spec, compare, pattern
        self.copies, self.slots, self.a_copies = copies, slots, len(a)
        self.alignment = int(info["view_alignment"])
        self.c_initial = np.ascontiguousarray(c_initial)
        self.inputs = {"A": self._input("A", a, len(a))}
        self.inputs.update({name: self._input(name, array, copies) for name, array in (("B", b), ("bias", bias))})
        self.c = Arena(device, "C", self.c_initial.nbytes, slots, self.alignment, "slot", pattern)
        self.c.write(self.c_initial)
        self.c0 = device.allocate(self.c.total)
        self.c0.copy_from(self.c.buffer)
        self._workspaces: dict[int, tuple[Arena, _core.Buffer]] = {}
        self._args: tuple[Arena, bytes, list[list]] | None = None
        # Copied before every round with C: streams `evict` bytes through the cache (ColdPlan).
        self.evict: list[tuple[_core.Buffer, _core.Buffer]] = []
        if evict:
            source = device.allocate(evict)
            source.fill(0)
            self.evict = [(device.allocate(evict), source)]

    def _input(self, name: str, content: np.ndarray | list[np.ndarray], count: int) -> tuple[Arena, _core.Buffer]:
        first = content[0] if isinstance(content, list) else content
        arena = Arena(self.device, name, first.nbytes, count, self.alignment, pattern=self.pattern)
        arena.write(content)
        pristine = self.device.allocate(arena.total)
        pristine.copy_from(arena.buffer)
        return arena, pristine

    def a_copy(self, slot: int | np.ndarray) -> int | np.ndarray:
        """The copy of A that slot `slot` reads (slot_args)."""
        return slot % self.a_copies

    def workspace(self, floats: int) -> tuple[Arena, _core.Buffer]:
        """The workspace arena for `floats` floats per slot (zero, guarded) and its pristine twin."""
        if floats not in self._workspaces:
            arena = Arena(self.device, "the workspace", 4 * floats, self.slots, self.alignment, "slot", self.pattern)
            arena.write(np.zeros(0, dtype=np.uint8))
            pristine = self.device.allocate(arena.total)
            pristine.copy_from(arena.buffer)
            self._workspaces = {floats: (arena, pristine)}  # one at a time: they can be large
        return self._workspaces[floats]

    def slot_args(self, ws: Arena, params: bytes) -> list[list]:
        """The six kernel arguments of every slot (kept: every variant with this workspace
        takes the same, and a cold spec has hundreds of slots)."""
        if self._args is None or self._args[0] is not ws or self._args[1] != params:
            a, b, bias = (self.inputs[n][0].views for n in ("A", "B", "bias"))
            self._args = (ws, params, [[a[self.a_copy(i)], b[i % self.copies], self.c.views[i],
                                        bias[i % self.copies], ws.views[i], params] for i in range(self.slots)])
        return self._args[2]

    def resets(self, ws: Arena, ws0: _core.Buffer) -> list[tuple[_core.Buffer, _core.Buffer]]:
        """What the measurement loop copies before every round: C and the workspace from their
        pristine twins, and the eviction buffer where the plan has one."""
        return [(self.c.buffer, self.c0), (ws.buffer, ws0), *self.evict]

    def reset(self, ws: Arena, ws0: _core.Buffer) -> None:
        for target, source in self.resets(ws, ws0):
            target.copy_from(source)

    def runs(self, first: int, count: int) -> list[tuple[int, int]]:
        """Slots first, first + 1, ... (`count` of them, wrapping past the last slot) as at most
        two runs of consecutive slots, (first slot, length) each."""
        if not 1 <= count <= self.slots:
            raise ValueError(f"{count} slots asked of {self.slots}")
        head = min(count, self.slots - first)
        return [(first, head)] + ([(0, count - head)] if count > head else [])

    def outputs(self, first: int = 0, count: int = 1) -> tuple[np.ndarray, str | None]:
        """C of slots first, first + 1, ... (`count` of them, wrapping) as (count, batch, m, n),
        and how a guard band next to one of them was written, if one was."""
        dtype = self.c_initial.dtype
        parts, damage = [], None
        for start, length in self.runs(first, count):
            raw = self.c.read_run(start, length)
            parts.append(self.c.copies_of(raw, length).view(dtype).reshape(length, *self.c_initial.shape))
            damage = damage or self.c.band_damage(raw, length)
        return np.concatenate(parts), damage

    def strays(self, first: int, count: int) -> str | None:
        """After C was reset and only slots first .. (`count`, wrapping) were launched: how the
        rest of C's arena (other slots and their bands) was written, if it was. Compared with
        C's pristine twin on the device, so a stray write anywhere in the arena is found
        without reading it back."""
        runs = sorted(self.runs(first, count))
        edges = [0] + [b for start, length in runs for b in self.c.span(start, length)] + [self.c.total]
        rest = [(lo, hi) for lo, hi in zip(edges[::2], edges[1::2], strict=True) if hi > lo]
        pairs = [(self.c.buffer.view(lo, hi - lo), self.c0.view(lo, hi - lo)) for lo, hi in rest]
        if self.compare.all_equal(pairs):
            return None
        lo, hi = next(r for r, pair in zip(rest, pairs, strict=True) if not self.compare.equal(*pair))
        return f"wrote into C outside the slots it was launched on (bytes {lo} to {hi} of C's arena)"

    def damage(self, ws: Arena, ws0: _core.Buffer, first_only: bool = False) -> Damage | None:
        """The first input or workspace the kernel changed, with where, or None. With
        `first_only`, after a launch on slot 0 alone, only what it was given is compared:
        input copy 0 and workspace slot 0 with their bands."""
        named = [(name, arena, pristine) for name, (arena, pristine) in self.inputs.items()]
        named.append(("workspace", ws, ws0))
        pairs = [self._pair(arena, pristine, first_only) for _, arena, pristine in named]
        if self.compare.all_equal(pairs):  # the common case in one read; else which, one by one
            return None
        for (name, arena, pristine), pair in zip(named, pairs, strict=True):
            if not self.compare.equal(*pair):
                what = "left its workspace dirty (the ABI says zero)" if name == "workspace" else \
                    f"changed its input {name}"
                return Damage(name, self._locate(arena, pristine, what))
        return None

    @staticmethod
    def _pair(arena: Arena, pristine: _core.Buffer, first_only: bool) -> tuple[_core.Buffer, _core.Buffer]:
        if not first_only or arena.count == 1:
            return arena.buffer, pristine
        span = arena.guard + arena.stride  # copy 0 and the bands on either side
        return arena.buffer.view(0, span), pristine.view(0, span)

    def _locate(self, arena: Arena, pristine: _core.Buffer, inside: str) -> str:
        """Says where two device buffers differ: in a guard band, or inside the data."""
        got = arena.read()
        want = np.empty_like(got)
        pristine.read(want)
        band = arena.band_damage(np.where(got == want, _pattern(arena.total, arena.pattern), got))
        if band:
            return band
        changed = np.count_nonzero(arena.copies_of(got) != arena.copies_of(want))
        return f"{inside} ({changed} bytes)"

    @cached_property
    def nbytes(self) -> int:
        """Device memory these arenas take, before any workspace."""
        inputs = sum(2 * arena.total for arena, _ in self.inputs.values())
        return inputs + 2 * self.c.total + sum(2 * source.nbytes for _, source in self.evict)


@dataclass(frozen=True)
class ColdPlan:
    """How a spec's launches find their inputs: `copies` of B and the bias rotated, and
    `evict` bytes streamed through the cache before every round (0: none), and why (`how`):

    warm    one copy; inputs may be in cache from the launches before;
    size    cold, one copy: the inputs are over twice the cache, so no launch finds them there;
    rotate  cold: enough copies that launches rotating through them never find theirs in
            the cache (2 x cache / bytes read);
    evict   cold, where those copies would be too many: as many as the bounds allow, rounds
            of at most that many launches (slots = copies), and a buffer of twice the cache
            copied before every round, outside the timed span, so each round starts with
            none of them in the cache;
    evict-partial  the same with a shorter buffer, where twice the cache would take too
            long to copy before every round (so some inputs may still be in the cache).
    """

    copies: int
    evict: int
    how: str


def plan_cold(spec: Spec, cache_bytes: int, cold: bool, budget: int, max_copies: int, max_evict: int = 0) -> ColdPlan:
    """The plan for `spec` under a last-level cache of `cache_bytes`: copies are bounded by
    `max_copies` and by `budget` bytes (the eviction buffer, two of twice the cache, comes
    on top), the eviction buffer by `max_evict` bytes where given (`how` then says it was
    cut short: "evict-partial")."""
    if not cold:
        return ColdPlan(1, 0, "warm")
    read = spec.bytes_read()
    wanted = math.ceil(2 * max(0, cache_bytes) / read)
    if wanted <= 1:
        return ColdPlan(1, 0, "size")
    copies = max(1, min(wanted, max_copies, budget // read))
    if copies >= wanted:
        return ColdPlan(copies, 0, "rotate")
    evict = 2 * cache_bytes
    if max_evict and evict > max_evict:
        return ColdPlan(copies, max_evict, "evict-partial")
    return ColdPlan(copies, evict, "evict")
