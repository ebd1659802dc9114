"""Kernel families from TOML manifests, expanded into variants (kernels/README.md)."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import _core, expr, paths
from .backends import BACKENDS
from .dtypes import define
from .errors import InputError
from .specs import DTYPES, Spec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Family", "ManifestError", "Variant", "build_kernel", "load_families", "load_variants",
           "prelude_parts", "prelude_source", "select", "split_need"]

SPEC_FIELDS = ("op", "dtype", "batch", "m", "n", "k", "transpose_a", "transpose_b", "alpha", "beta", "bias", "quant",
               "qbits", "qgroup")
_KEYS = {
    "name", "description", "source", "entry", "backends", "dtypes", "config", "baseline", "builtin",
    "workspace", "grid", "where", "requires", "dispatch", "needs", "quant", "rounds_b",
}
# What a family may need of the device (manifest `needs`): each is a boolean in the
# device's info dict (csrc/core/device.h) with a "<name>_detail" that says, when it is
# false, what the device lacks. A need may hold for some variants only: "NAME if EXPR",
# EXPR over the grid's parameters (as `where`).
NEEDS = ("matrix_unit", "warpgroup_mma", "thread_block_clusters")
_DISPATCH_KEYS = {"groups", "threads"}
# Launch dimensions are 32-bit on every backend.
_U32 = 2**32 - 1
# Floats of workspace one launch may ask for (16 GiB): past any device's memory, so a
# larger request is a mistake in the manifest, reported as one.
_MAX_WORKSPACE = 2**32
# Grid keys become macro names and string values parts of them.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A config template names grid parameters in braces and nothing else.
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def spec_label(env: dict[str, object]) -> str:
    """The spec part of an expression environment, for messages."""
    return f"{env.get('op')} batch={env.get('batch')} m={env.get('m')} n={env.get('n')} k={env.get('k')}"


def config_name(template: str, params: dict[str, object]) -> str:
    """`template` with each {NAME} replaced by that parameter's value: names only, no
    attribute access or formatting, so a template can read nothing but the grid."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise KeyError(name)
        return str(params[name])

    return _PLACEHOLDER.sub(value, template)


class ManifestError(InputError, ValueError):
    """A family manifest that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    manifest: Path
    source: Path | None  # None for a vendor builtin (one may have a kernel it launches first)
    entry: str
    builtin: str | None
    backends: tuple[str, ...]
    dtypes: tuple[str, ...]
    config: str
    baseline: str | None  # "vendor", "fallback" or None
    grid: dict[str, list[object]]
    where: tuple[str, ...]
    requires: tuple[str, ...]
    groups: tuple[object, ...]
    threads: tuple[object, ...]
    workspace: object
    needs: tuple[str, ...] = ()
    # Takes B quantized (spec.quant set: kernels/README.md, "Quantized weights"), and only so.
    quant: bool = False
    # Multiplies B rounded to the dtype (dequantized into T first, as an app without a fused
    # kernel does, or made in T on the way to the tensor cores): verified with that
    # rounding allowed for (metrics.tolerance).
    rounds_b: bool = False


@dataclass(frozen=True)
class Variant:
    family: Family
    config: str
    params: dict[str, object] = field(hash=False)

    @property
    def id(self) -> str:
        return f"{self.family.name}/{self.config}"

    def _env(self, spec: Spec) -> dict[str, object]:
        env = dict(spec.fields())
        env.update(self.params)
        return env

    def unsupported_reason(self, spec: Spec, device: dict | None = None) -> str | None:
        """Why this variant cannot run `spec` (on the device whose info dict is `device`,
        when given), or None if it can."""
        if spec.dtype not in self.family.dtypes:
            return f"dtype {spec.dtype} not in {', '.join(self.family.dtypes)}"
        if (spec.quant is not None) != self.family.quant:
            return f"B is quantized ({spec.quant}); the family reads B in the dtype" if spec.quant else \
                "the family reads quantized weights; B is not quantized"
        # A dtype the device cannot hold is a need of every family (device info `bfloat16`).
        if spec.dtype == "bfloat16" and device is not None and not device.get("bfloat16", False):
            return f"needs bfloat16: {device.get('bfloat16_detail') or 'the device does not say it takes it'}"
        for text in self.family.needs if device is not None else ():
            need, condition = split_need(text)
            if condition is not None and not self._eval(condition, self.params, "needs"):
                continue
            if not device.get(need, False):
                return f"needs {need}: {device.get(need + '_detail') or 'the device does not say it has one'}"
        env = self._env(spec)
        for rule in self.family.requires:
            if not self._eval(rule, env, "requires"):
                return f"requires {rule}"
        return None

    def geometry(self, spec: Spec) -> tuple[list[int], list[int]]:
        """Number of groups and threads per group for `spec`, each from 1 to 2**32 - 1."""
        env = self._env(spec)
        return ([self._count(g, env, f"dispatch.groups[{i}]", _U32) for i, g in enumerate(self.family.groups)],
                [self._count(t, env, f"dispatch.threads[{i}]", _U32) for i, t in enumerate(self.family.threads)])

    def workspace_floats(self, spec: Spec) -> int:
        """Floats of workspace the kernel needs; at least one so the argument is always bound."""
        if self.family.workspace is None:
            return 1
        return max(1, self._count(self.family.workspace, self._env(spec), "workspace", _MAX_WORKSPACE, low=0))

    def _count(self, text: object, env: dict[str, object], where: str, high: int, low: int = 1) -> int:
        value = self._eval(text, env, where)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ManifestError(f"{self.family.manifest}: {where} of {self.id}: {text!r} gives {value!r} for "
                                f"{spec_label(env)}; it must be an integer from {low} to {high}")
        return value

    def defines(self, dtype: str) -> dict[str, str]:
        """The preprocessor defines the kernel is compiled with, every name prefixed `MB_`.

        `MB_DTYPE` selects the element type (dtypes.CODES: 0 float32, 1 float16, 2
        bfloat16). Grid parameter `BN = 64` becomes `MB_BN=64`
        (bools 0/1); a string value s of key K becomes `MB_K_s=1` (`MB_layout_nt`).
        Metal defines them before <metal_stdlib> is read, so a short name such as `BN`
        could clash with a name in Apple's headers; the prefix keeps them apart.
        Manifests still name the parameters without it (`ceil_div(n, BN)`).
        """
        out = define(dtype)
        for name, value in self.params.items():
            if isinstance(value, str):
                out[f"MB_{name}_{value}"] = "1"
            else:
                out[f"MB_{name}"] = str(int(value))  # bools become 0/1
        return out

    @property
    def precompiled(self) -> bool:
        """A .metallib: compiled ahead of time, so defines no longer apply to it."""
        return self.family.source is not None and self.family.source.suffix == ".metallib"

    def source(self, backend: str) -> str:
        """What the backend compiles: its prelude, the shared header, then the body."""
        if self.family.source is None:
            raise ManifestError(f"{self.family.manifest}: {self.id} is a builtin and has no source")
        return prelude_source(backend, self.family.source)

    def source_hash(self, backend: str, dtype: str) -> str:
        """Identity of the compiled kernel: source text, entry and defines (or the builtin's name)."""
        if self.precompiled:
            text = hashlib.sha256(self.family.source.read_bytes()).hexdigest()  # type: ignore[union-attr]
        elif self.family.source:
            text = self.source(backend)
            if self.family.builtin:
                text = f"builtin:{self.family.builtin}\n{text}"
        else:
            text = f"builtin:{self.family.builtin}"
        # The text is hashed as it is, after the rest: JSON-escaping a whole source for
        # every pair of a sweep took longer than all of its hashing.
        digest = hashlib.sha256(json.dumps([backend, self.family.entry, self.defines(dtype)], sort_keys=True).encode())
        digest.update(b"\0")
        digest.update(text.encode())
        return digest.hexdigest()

    def _eval(self, text: object, env: dict[str, object], where: str) -> object:
        try:
            return expr.evaluate(text, env)  # type: ignore[arg-type]
        except expr.ExprError as e:
            raise ManifestError(f"{self.family.manifest}: {where} of {self.id}: {e}") from None


def build_kernel(device: _core.Device, backend: str, v: Variant, dtype: str) -> _core.Kernel:
    """The kernel of variant `v` for `dtype`: a vendor builtin, a precompiled library, or compiled from source."""
    if v.family.builtin:
        first = None if v.family.source is None else \
            device.compile(v.source(backend), v.family.entry, v.defines(dtype), f"{v.id} ({v.family.entry})")
        return device.builtin(v.family.builtin, v.id, v.defines(dtype), first)
    if v.precompiled:
        return device.load(str(v.family.source), v.family.entry, v.id)
    return device.compile(v.source(backend), v.family.entry, v.defines(dtype), v.id)


def prelude_source(backend: str, body: Path) -> str:
    """A kernel body as `backend` compiles it: its prelude, the shared header, then the
    body after a #line directive, so that compiler messages name the body's own lines."""
    return _sources(backend, body)[2]


def prelude_parts(backend: str, body: Path) -> tuple[str, str]:
    """What prelude_source puts together: the prelude and the shared header as one text, and the body."""
    head, text, _ = _sources(backend, body)
    return head, text


def _sources(backend: str, body: Path) -> tuple[str, str, str]:
    """(prelude and shared header, body, prelude_source's whole text) of `body` for `backend`."""
    include = paths.kernels_dir() / "include"
    files = (include / f"{backend}.h", include / "common.h", body)
    # A sweep asks for the same few sources thousands of times (every pair's key hashes
    # its source): each file is read, and the texts joined, again only when its size or
    # time stamp changed.
    stamp = tuple((f, st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    if _SOURCES.get((backend, body)) is None or _SOURCES[(backend, body)][0] != stamp:
        prelude, common, text = (read_text(f) for f in files)
        head = "".join([prelude, "\n", common])
        _SOURCES[(backend, body)] = (stamp, (head, text, "".join([head, f'\n#line 1 "{body.name}"\n', text])))
    return _SOURCES[(backend, body)][1]


_SOURCES: dict[tuple[str, Path], tuple[tuple, tuple[str, str, str]]] = {}


def _want(data: dict, key: str, kind: type | tuple[type, ...], path: Path, default: object = ...) -> object:
    if key not in data:
        if default is ...:
            raise ManifestError(f"{path}: missing field '{key}'")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(f"{path}: field '{key}' must be {names}, got {value!r}")
    return value


def _str_list(data: dict, key: str, path: Path, default: Sequence[str]) -> tuple[str, ...]:
    value = _want(data, key, list, path, list(default))
    if not all(isinstance(v, str) for v in value):  # type: ignore[union-attr]
        raise ManifestError(f"{path}: field '{key}' must be a list of strings")
    return tuple(value)  # type: ignore[arg-type]


def _default_backends(source: Path, kernels_root: Path) -> tuple[str, ...]:
    """A source in a folder named after a backend is native to it; any other is portable."""
    folder = source.parent.name
    if folder in BACKENDS:
        return (folder,)
    return tuple(b for b in BACKENDS if (kernels_root / "include" / f"{b}.h").is_file())


def read_text(path: Path, what: str = "") -> str:
    """A UTF-8 text file; ManifestError naming it (and `what` asked for it: a manifest's field) otherwise."""
    where = f"{what}: {path}" if what else str(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise ManifestError(f"{where}: {e.strerror}") from None


@lru_cache(maxsize=1)
def reserved_macros() -> frozenset[str]:
    """The MB_ macros metalbench itself defines or the preludes (kernels/include) use: a grid
    parameter may not redefine one (`DTYPE` would become MB_DTYPE, the dtype's switch)."""
    include = paths.kernels_dir() / "include"
    names = {"MB_DTYPE"}
    for header in sorted(include.glob("*.h")):
        names.update(re.findall(r"\bMB_[A-Za-z0-9_]+\b", header.read_text(encoding="utf-8")))
    return frozenset(names)


def _macros(key: str, values: list[object]) -> set[str]:
    """The macro names grid parameter `key` becomes (Variant.defines)."""
    return {f"MB_{key}_{v}" if isinstance(v, str) else f"MB_{key}" for v in values}


def _expression(value: object, path: Path, where: str) -> object:
    """A manifest expression as written: a string, or an integer standing for itself."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ManifestError(f"{path}: {where} must be an integer or an expression in quotes, got "
                        f"{type(value).__name__} {value!r}")


def parse_family(path: Path) -> Family:
    """Reads and checks one manifest; every problem names the file and the field."""
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: {e}") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise ManifestError(f"{path}: unknown field '{sorted(unknown)[0]}' (known: {', '.join(sorted(_KEYS))})")
    name = _want(data, "name", str, path)
    builtin = _want(data, "builtin", str, path, None)
    source: Path | None = None
    # A builtin's own `source` is a kernel it launches first (the dequantize step of
    # cublas-dequant), at the family's dispatch geometry, with the same arguments.
    if builtin is None or "source" in data:
        source = (path.parent / _want(data, "source", str, path)).resolve()  # type: ignore[operator]
        if not source.is_file():
            raise ManifestError(f"{path}: field 'source': no file {source}")
        if source.suffix == ".metallib" and source.parent.name != "metal":
            raise ManifestError(f"{path}: field 'source': a precompiled .metallib belongs in a metal/ folder")
        if source.suffix != ".metallib":
            read_text(source, f"{path}: field 'source'")
    entry = _want(data, "entry", str, path, "" if builtin and source is None else ...)
    if builtin and source is not None and source.suffix == ".metallib":
        raise ManifestError(f"{path}: field 'source': a builtin's first step is compiled, not a .metallib")
    if "backends" in data:
        backends = _str_list(data, "backends", path, ())
    elif source is not None:
        backends = _default_backends(source, paths.kernels_dir())
    else:
        raise ManifestError(f"{path}: a builtin family must list its 'backends'")
    for b in backends:
        if b not in BACKENDS:
            raise ManifestError(f"{path}: field 'backends': unknown backend {b!r} (known: {', '.join(BACKENDS)})")
    dtypes = _str_list(data, "dtypes", path, ["float16"])
    for d in dtypes:
        if d not in DTYPES:
            raise ManifestError(f"{path}: field 'dtypes': unknown dtype {d!r} (known: {', '.join(DTYPES)})")
    baseline = _want(data, "baseline", str, path, None)
    if baseline not in (None, "vendor", "fallback"):
        raise ManifestError(f"{path}: field 'baseline' must be 'vendor' or 'fallback', got {baseline!r}")
    grid = _want(data, "grid", dict, path, {})
    for key, values in grid.items():  # type: ignore[union-attr]
        if key in SPEC_FIELDS:
            raise ManifestError(f"{path}: grid.{key} shadows the spec field of that name")
        if key in _KEYS:
            # TOML puts a key written after [grid] into the grid table.
            raise ManifestError(f"{path}: grid.{key}: '{key}' belongs before the [grid] table")
        if not _IDENTIFIER.match(key):
            raise ManifestError(f"{path}: grid.{key}: a parameter's name must be an identifier (letters, digits, _)")
        if not isinstance(values, list) or not values:
            raise ManifestError(f"{path}: grid.{key} must be a non-empty list")
        if not all(isinstance(v, (int, bool, str)) for v in values):
            raise ManifestError(f"{path}: grid.{key}: values must be integers, booleans or strings")
        for v in values:
            if isinstance(v, str) and not re.fullmatch(r"[A-Za-z0-9_]+", v):
                raise ManifestError(f"{path}: grid.{key}: string value {v!r} must be letters, digits and _ only "
                                    f"(it becomes part of a macro name)")
            if isinstance(v, int) and not isinstance(v, bool) and not -2**31 <= v < 2**31:
                raise ManifestError(f"{path}: grid.{key}: value {v} does not fit a 32-bit int")
        taken = _macros(key, values) & reserved_macros()
        if taken:
            raise ManifestError(f"{path}: grid.{key}: it would define {sorted(taken)[0]}, which metalbench or the "
                                "kernels' prelude already defines; give the parameter another name")
    names: dict[str, str] = {}
    for key, values in grid.items():  # type: ignore[union-attr]
        for macro in _macros(key, values):
            if macro in names:
                raise ManifestError(f"{path}: grid.{key} and grid.{names[macro]} would both define {macro}")
            names[macro] = key
    dispatch = _want(data, "dispatch", dict, path, {} if builtin and source is None else ...)
    unknown = set(dispatch) - _DISPATCH_KEYS  # type: ignore[arg-type]
    if unknown:
        raise ManifestError(f"{path}: unknown field 'dispatch.{sorted(unknown)[0]}'")
    geometry = {}
    for key in ("groups", "threads"):
        value = dispatch.get(key, [1, 1, 1])  # type: ignore[union-attr]
        if not isinstance(value, list) or not 1 <= len(value) <= 3:
            raise ManifestError(f"{path}: dispatch.{key} must be a list of 1 to 3 expressions")
        value = [_expression(v, path, f"dispatch.{key}[{i}]") for i, v in enumerate(value)]
        geometry[key] = tuple(value) + (1,) * (3 - len(value))
    family = Family(
        name=name,  # type: ignore[arg-type]
        description=_want(data, "description", str, path, ""),  # type: ignore[arg-type]
        manifest=path,
        source=source,
        entry=entry,  # type: ignore[arg-type]
        builtin=builtin,  # type: ignore[arg-type]
        backends=backends,
        dtypes=dtypes,
        config=_want(data, "config", str, path),  # type: ignore[arg-type]
        baseline=baseline,  # type: ignore[arg-type]
        grid=grid,  # type: ignore[arg-type]
        where=_str_list(data, "where", path, []),
        requires=_str_list(data, "requires", path, []),
        groups=geometry["groups"],
        threads=geometry["threads"],
        workspace=_expression(data["workspace"], path, "field 'workspace'") if "workspace" in data else None,
        needs=_str_list(data, "needs", path, []),
        quant=_want(data, "quant", bool, path, False),  # type: ignore[arg-type]
        rounds_b=_want(data, "rounds_b", bool, path, False),  # type: ignore[arg-type]
    )
    if family.rounds_b and not family.quant:
        raise ManifestError(f"{path}: field 'rounds_b' is for families that take quantized B (quant = true)")
    for text in family.needs:
        need, _ = split_need(text)
        if need not in NEEDS:
            raise ManifestError(f"{path}: field 'needs': unknown need {need!r} (known: {', '.join(NEEDS)})")
    _check_names(family)
    return family


def split_need(text: str) -> tuple[str, str | None]:
    """A manifest need as (name, condition over the grid's parameters, or None: every variant)."""
    name, sep, condition = text.partition(" if ")
    return name.strip(), condition.strip() if sep else None


def _check_names(family: Family) -> None:
    """Rejects expressions naming unknown things now, not halfway through a sweep."""
    known = set(SPEC_FIELDS) | set(family.grid)
    texts = [("where", w) for w in family.where] + [("requires", r) for r in family.requires]
    texts += [("needs", c) for _, c in map(split_need, family.needs) if c is not None]
    texts += [("dispatch.groups", g) for g in family.groups] + [("dispatch.threads", t) for t in family.threads]
    if family.workspace is not None:
        texts.append(("workspace", family.workspace))
    for where, text in texts:
        try:
            unknown = expr.names_in(text)  # type: ignore[arg-type]
        except expr.ExprError as e:
            raise ManifestError(f"{family.manifest}: {where}: {e}") from None
        if where in ("where", "needs"):
            unknown -= set(family.grid)
        else:
            unknown -= known
        if unknown:
            raise ManifestError(f"{family.manifest}: {where}: unknown name {sorted(unknown)[0]!r} in {text!r}")


def expand(family: Family) -> list[Variant]:
    """Every grid point that passes `where`, each with its own config name."""
    keys = list(family.grid)
    variants: dict[str, Variant] = {}
    for values in itertools.product(*(family.grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        try:
            keep = all(expr.evaluate(w, params) for w in family.where)
        except expr.ExprError as e:
            raise ManifestError(f"{family.manifest}: where: {e}") from None
        try:
            config = config_name(family.config, params)
        except KeyError as e:
            raise ManifestError(f"{family.manifest}: config {family.config!r}: {{{e.args[0]}}} is not a grid "
                                f"parameter (known: {', '.join(keys) or 'none'})") from None
        if not keep:
            continue
        if config in variants:
            raise ManifestError(
                f"{family.manifest}: config {family.config!r} names two grid points {config!r}: "
                f"{variants[config].params} and {params}"
            )
        variants[config] = Variant(family, config, params)
    return list(variants.values())


def load_families(extra_dirs: Iterable[Path] = ()) -> list[Family]:
    """Built-in families, then those of each user folder; a name defined twice is an error."""
    dirs = [paths.kernels_dir(), *extra_dirs]
    families: dict[str, Family] = {}
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise ManifestError(f"{folder}: not a folder of kernel manifests")
        for manifest in sorted(folder.glob("*.toml")):
            family = parse_family(manifest)
            if family.name in families:
                raise ManifestError(
                    f"{manifest}: family '{family.name}' is already defined by {families[family.name].manifest}"
                )
            families[family.name] = family
    return list(families.values())


def load_variants(backend: str | None = None, extra_dirs: Iterable[Path] = ()) -> list[Variant]:
    """Every variant, or those that run on `backend`."""
    out: list[Variant] = []
    for family in load_families(extra_dirs):
        if backend is None or backend in family.backends:
            out.extend(expand(family))
    return out


def select(variants: Sequence[Variant], patterns: Sequence[str]) -> list[Variant]:
    """Variants whose id matches any glob pattern (all when there is none)."""
    if not patterns:
        return list(variants)
    return [v for v in variants if any(fnmatch.fnmatchcase(v.id, p) for p in patterns)]
