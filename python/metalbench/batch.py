"""Many variants of one family built as one program.

On some backends a build costs mostly the compiler's start and its headers, not the
kernel: PoCL parses clang's 900 KB opencl-c.h for every program (about 0.3 s of a
0.35 s build), so a sweep's first run spent most of its build time there. Where a
backend's `Traits.batch_builds` says so, a family's variants are compiled together:
the prelude once, then each variant's body between its own grid macros, its entry
renamed. Each body is compiled with the same macros as in a program of its own (the
prelude does not depend on them: variants.reserved_macros keeps the grid's names out
of it), and the verdict is taken on each kernel as always; a variant's identity, its
exported source and its stored results stay its own (Variant.source, Variant.source_hash).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path

from . import _core
from .dtypes import define
from .variants import Variant, prelude_parts

__all__ = ["BATCH", "batches", "build", "source"]

# Variants a program holds at most. Sixteen pay the header once for sixteen bodies
# (benchmarks/batch_builds.py, 16 variants a family: on PoCL, whose empty program builds
# in 0.29 s, 2.0x to 6.0x as fast as one program each; on NVIDIA's OpenCL, 0.04 s, 1.3x;
# results/batch_builds_*), and keep a build a few seconds long, far inside the worker's
# build deadline (--timeout).
BATCH = 16

_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)", re.MULTILINE)


def batches(variants: Sequence[Variant], size: int = BATCH, alone: Collection[Path | None] = ()) -> list[list[Variant]]:
    """`variants` in groups that can share a program (the same body and entry), at most
    `size` to a group, in their order; builtins, precompiled variants and those whose body
    is in `alone` are alone."""
    shared: dict[tuple, list[Variant]] = {}
    out: list[list[Variant]] = []
    for v in variants:
        if v.family.source is None or v.family.builtin or v.precompiled or v.family.source in alone:
            out.append([v])
            continue
        group = shared.setdefault((v.family.source, v.family.entry), [])
        group.append(v)
        if len(group) == size:
            out.append(shared.pop((v.family.source, v.family.entry)))
    out.extend(shared.values())
    return out


def source(backend: str, variants: Sequence[Variant], dtype: str) -> tuple[str, list[str]]:
    """One program for `variants` (one body and entry) and the entry each variant's kernel has in it."""
    body = variants[0].family.source
    entry = variants[0].family.entry
    assert body is not None and all((v.family.source, v.family.entry) == (body, entry) for v in variants)
    head, text = prelude_parts(backend, body)
    common = define(dtype)
    # The body's own macros go with it too: one defined under `#ifndef` would otherwise
    # keep the first variant's value.
    own = sorted(set(_DEFINE.findall(text)) - {entry})
    parts, entries = [head], []
    for i, v in enumerate(variants):
        macros = {k: value for k, value in v.defines(dtype).items() if k not in common}
        entries.append(f"mb_batch_{i}_{entry}")
        parts += [*(f"#define {k} {value}" for k, value in macros.items()), f"#define {entry} {entries[-1]}",
                  f'#line 1 "{body.name}"', text, *(f"#undef {k}" for k in [*macros, entry, *own])]
    return "\n".join(parts) + "\n", entries


def build(device: _core.Device, backend: str, variants: Sequence[Variant], dtype: str) -> list[_core.Kernel]:
    """The kernels of `variants` (one body and entry), from one build; raises what the build
    raises (CompileError where any of them does not compile: the caller builds them one by
    one to learn which)."""
    text, entries = source(backend, variants, dtype)
    # Every kernel holds the program; the backend builds it once (its compile keeps a
    # program while a kernel of it lives) and gives each further entry from it.
    return [device.compile(text, e, define(dtype), v.id) for v, e in zip(variants, entries, strict=True)]
