"""`metalbench export`: a run's winners as a dispatch table an application can ship.

For every spec of the run, the best correct variant by the run's ranking clock
(report.build(...).specs[i].best), with what it takes to launch it and what it was
measured at, written to a folder:

    dispatch.json            the table (EXPORT_SCHEMA; docs/json.md lists its fields)
    metalbench_dispatch.h    the same table as C data, for the host code of any backend, with
                             MBParams as kernels/include/common.h defines it (copied from there)
    <family>-<config>-<f16|bf16|f32>.<cl|cu|metal>
                             one self-contained source per winning kernel: its defines
                             as #define lines, then the backend's prelude, common.h and
                             the body, so it compiles with no defines and no metalbench

A winner that is a vendor library (cuBLAS, MPS) becomes a "use the vendor library"
entry with no source. A winning kernel whose source on disk is no longer the one the
run measured (its hash differs) is refused rather than exported under its old times.

File names keep letters, digits, '_', '.' and '-' of the family and config; a name
that had other characters gets a short hash of the variant id as well, so that two
families whose names differ only there ("col x", "col_x") never share a file. Names
quoted in C comments have any "*/" broken up, so no name can end a comment early.

A run that did not finish (interrupted, abandoned) is exported with a warning: a spec
it never reached is a "none" entry marked `"state": "not reached"`, and a spec it
measured in part has its best so far, marked `"state": "incomplete"`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .backends import TRAITS
from .dtypes import CODES, SHORT
from .errors import InputError
from .report import CLOCK_NAMES, Report
from .results import CLOCKS, Result, Run, Status
from .specs import DTYPES, SHORT_OPS, Spec, SpecError, spec_from_key
from .variants import Variant

__all__ = ["EXPORT_SCHEMA", "ExportError", "Exported", "build_table", "params_block", "self_contained_source",
           "write_export"]

# The dispatch table's format (semver): a new field bumps the minor version, a removed
# or changed one the major.
# 1.1.0: specs[].state ("not reached", "incomplete") for runs that did not finish.
# 1.2.0: specs[].quant: a quantized B's format, where its parts lie in B's buffer, its MBParams.
EXPORT_SCHEMA = "1.2.0"
# What to call a vendor builtin in the table.
VENDOR_LIBRARIES = {"cublas": "cuBLAS", "mps": "Metal Performance Shaders", "mps-gemv": "Metal Performance Shaders"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# The marks around common.h's definition of MBParams and the op codes, which the
# dispatch header copies for host code (the rest of common.h is for kernels).
_PARAMS_BEGIN = "/* ---- MBParams:"
_PARAMS_END = "/* ---- end of MBParams ---- */"


class ExportError(InputError, ValueError):
    """A run that cannot be exported as it is; the message says which variant and why."""


@dataclass(frozen=True)
class Exported:
    """What write_export wrote."""

    table: Path
    header: Path
    sources: list[Path]
    entries: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)  # what the user must know before shipping it


def _timing(stats: dict | None) -> dict[str, Any] | None:
    if not stats or not stats.get("count"):
        return None
    return {"median_us": stats["median"] / 1e3,
            "ci_us": [stats.get("ci_lo", stats["min"]) / 1e3, stats.get("ci_hi", stats["max"]) / 1e3],
            "noise": float(stats.get("rel_stdev", 0.0)), "samples": int(stats["count"]), "stop": stats.get("stop", "")}


def comment_text(text: str) -> str:
    """`text` safe inside a C block comment: a "*/" in it (a family or suite name) would end
    the comment and leave the rest as code."""
    return str(text).replace("*/", "* /")


def file_stem(family: str, config: str, dtype: str) -> str:
    """A source file's name before its extension: the family and config as they are where
    they are file-safe, with a short hash of the variant id where they were not."""
    raw = f"{family}-{config}"
    safe = _UNSAFE.sub("_", raw)
    if safe != raw or safe.startswith("."):
        safe += "-" + hashlib.sha256(f"{family}/{config}".encode()).hexdigest()[:8]
    return f"{safe}-{SHORT[dtype]}"


def _spec_fields(spec: Spec) -> dict[str, Any]:
    return {"op": spec.op, "dtype": spec.dtype, "batch": spec.batch, "m": spec.m, "n": spec.n, "k": spec.k,
            "transpose_a": spec.transpose_a, "transpose_b": spec.transpose_b, "alpha": spec.alpha, "beta": spec.beta}


def quant_fields(spec: Spec) -> dict[str, Any] | None:
    """How an application must pack a quantized B for this spec's kernel (kernels/README.md,
    "Quantized weights"), or None for an unquantized one: the format, where the codes, scales
    and biases lie in B's one buffer, and the MBParams fields that say so."""
    q, layout = spec.q, spec.b_layout()
    if q is None or layout is None:
        return None
    item = DTYPES[spec.dtype].itemsize
    values = spec.param_values()
    return {
        "format": q.name, "scheme": "MLX affine (mlx.core.quantize, mode 'affine'): w = scale * code + bias",
        "bits": q.bits, "group": q.group,
        "codes": {"offset_bytes": 0, "bytes": layout.codes_bytes, "type": "uint32",
                  "rows": spec.batch * spec.n, "words_per_row": q.words(spec.k),
                  "order": f"row j of batch entry bi from word bi * stride_b + j * ldb; code kk at bits "
                           f"kk * {q.bits} .. of the row's little-endian bit stream (MLX's packing)"},
        "scales": {"offset_bytes": layout.scales * item, "count": layout.count, "type": spec.dtype,
                   "order": "row-major (batch, n, k / group)"},
        "biases": {"offset_bytes": layout.biases * item, "count": layout.count, "type": spec.dtype,
                   "order": "row-major (batch, n, k / group)"},
        "buffer_bytes": layout.nbytes,
        "params": {name: values[name] for name in ("ldb", "stride_b", "qbits", "qgroup", "qscales", "qbiases")},
    }


def self_contained_source(variant: Variant, backend: str, dtype: str, comment: str) -> str:
    """The variant's source for `backend` as one file: `comment`, its defines as #define
    lines, then the prelude, common.h and the body (with no #line directive, so that a
    compiler's line numbers are this file's own)."""
    body = variant.family.source
    if body is None:
        raise ExportError(f"{variant.id} is a vendor builtin and has no source")
    include = paths.kernels_dir() / "include"
    defines = "".join(f"#define {name} {value}\n" for name, value in variant.defines(dtype).items())
    return "".join([f"/* {comment_text(comment.strip())} */\n\n", defines, "\n",
                    (include / f"{backend}.h").read_text(), "\n", (include / "common.h").read_text(),
                    f"\n/* ---- {comment_text(body.name)} ---- */\n", body.read_text()])


def params_block() -> str:
    """kernels/include/common.h's MBParams block, from its first mark to its end mark:
    the struct, its field list and the MB_OP_* codes, under their own include guard."""
    path = paths.kernels_dir() / "include" / "common.h"
    text = path.read_text()
    start, end = text.find(_PARAMS_BEGIN), text.find(_PARAMS_END)
    if start < 0 or end < start:
        raise RuntimeError(f"{path}: no MBParams block between the marks {_PARAMS_BEGIN!r} and {_PARAMS_END!r}")
    return text[start:end + len(_PARAMS_END)]


def _winner(run: Run, index: int, variant: str) -> Result:
    for r in run.results:
        if r.spec_index == index and r.variant == variant and r.status == Status.OK:
            return r
    raise ExportError(f"run {run.id}: no stored result of {variant} on spec {index}")


def build_table(run: Run, report: Report, variants: list[Variant]) -> tuple[dict[str, Any], dict[str, str]]:
    """The dispatch table of `run` (ranked as `report` is) and the sources it names,
    by file name. `variants` must hold every winner's variant (load_variants)."""
    if run.backend not in TRAITS:
        raise ExportError(f"run {run.id}: backend {run.backend!r} has no export language")
    traits = TRAITS[run.backend]
    language, ext, how = traits.language, traits.extension, traits.compiled_with
    by_id = {v.id: v for v in variants}
    entries: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    kernels: dict[str, dict[str, Any]] = {}
    owners: dict[str, tuple[str, str]] = {}  # file stem -> the (variant, dtype) it holds
    for spec_report in report.specs:
        try:
            spec = spec_from_key(spec_report.key)
        except SpecError as e:
            raise ExportError(f"run {run.id}: spec {spec_report.index}: {e}") from None
        entry: dict[str, Any] = {"spec_index": spec_report.index, "spec_key": spec_report.key,
                                 "label": spec_report.label, "spec": _spec_fields(spec)}
        packing = quant_fields(spec)
        if packing is not None:
            entry["quant"] = packing
        if spec_report.state:
            entry["state"] = spec_report.state
        if spec_report.best is None:
            entry.update(kind="none", reason=f"not reached: run {run.id} stopped before it" if
                         spec_report.state == "not reached" else "no variant was correct on this spec")
            entries.append(entry)
            continue
        result = _winner(run, spec_report.index, spec_report.best)
        detail = result.detail
        v = by_id.get(spec_report.best)
        if v is None:
            raise ExportError(f"{spec_report.best}: won spec {spec_report.index} but is not among the families "
                              "found now (give the folder it came from with --kernels)")
        best_row = spec_report.best_row()
        entry.update(variant=v.id, family=v.family.name, source_hash=detail.get("source_hash"),
                     defines=detail.get("defines", {}), groups=detail.get("groups"), threads=detail.get("threads"),
                     workspace_floats=detail.get("workspace"),
                     times={c: t for c in CLOCKS if (t := _timing(result.clock(c))) is not None},
                     ties=[t for t in spec_report.ties if t != v.id],
                     roofline={"bytes": spec_report.bytes, "flops": spec_report.flops,
                               "gbps": best_row.gbps if best_row else None,
                               "pct_peak": best_row.pct_peak if best_row else None})
        if v.family.builtin:
            library = VENDOR_LIBRARIES.get(v.family.builtin, v.family.builtin)
            entry.update(kind="vendor", library=library,
                         note=f"use the vendor library ({library}): {v.family.description}")
            del entry["groups"], entry["threads"], entry["workspace_floats"]
        else:
            now = v.source_hash(run.backend, spec.dtype)
            if now != detail.get("source_hash"):
                raise ExportError(f"{v.id}: its source or defines changed since run {run.id} measured it "
                                  f"(hash {str(detail.get('source_hash'))[:12]} then, {now[:12]} now); run again, "
                                  "or check out the kernels it was measured with")
            name = file_stem(v.family.name, v.config, spec.dtype)
            while owners.setdefault(name, (v.id, spec.dtype)) != (v.id, spec.dtype):
                name += "-2"  # a crafted name that equals another's hashed one: still a file of its own
            if v.precompiled:
                entry.update(kind="precompiled", file=f"{name}.metallib", entry=v.family.entry)
                sources[entry["file"]] = str(v.family.source)  # copied, not written: marked by write_export
            else:
                file = f"{name}.{ext}"
                entry.update(kind="kernel", file=file, entry=v.family.entry)
                if file not in sources:
                    sources[file] = self_contained_source(
                        v, run.backend, spec.dtype,
                        f"{v.id} ({spec.dtype}), exported by metalbench from run {run.id} ({run.suite}, "
                        f"{run.device.get('name')}).\n   {language}; kernel `{v.family.entry}`, the six arguments "
                        f"(a, b, c, bias, ws, p) of kernels/README.md.\n   Self-contained: compile it as it is, "
                        f"with no defines. Source hash {detail.get('source_hash')}.")
            kernels.setdefault(entry["file"], {"file": entry["file"], "variant": v.id, "entry": v.family.entry,
                                               "dtype": spec.dtype, "defines": entry["defines"], "specs": []})
            kernels[entry["file"]]["specs"].append(spec_report.index)
        entries.append(entry)
    d = run.device
    table = {
        "schema": EXPORT_SCHEMA, "run": run.id, "suite": run.suite, "backend": run.backend, "language": language,
        "compile": how,
        "device": {"name": d.get("name"), "vendor": d.get("vendor"), "driver": d.get("driver"),
                   "peak_bandwidth": report.peak_bandwidth, "peak_source": report.peak_source},
        "rank_by": report.rank_by, "rank_clock": CLOCK_NAMES[report.rank_by], "mode": report.mode,
        "settings": run.settings, "kernels": list(kernels.values()), "specs": entries,
    }
    return table, sources


def _c_string(text: str | None) -> str:
    return "NULL" if text is None else json.dumps(text)  # a JSON string is a valid C string literal here


def header_source(table: dict[str, Any]) -> str:
    """metalbench_dispatch.h: the table as a C array, usable from the host code of any backend."""
    lines = [
        comment_text(f"/* metalbench dispatch table: run {table['run']} ({table['suite']}), {table['backend']} on "
                     f"{table['device']['name']},"),
        f" * ranked by {table['rank_clock']} time ({table['mode']} cache). Written by `metalbench export`: "
        "export again rather than edit.",
        " *",
        " * One entry per spec. kind 'kernel': compile `file` (beside this header) as it is and launch `entry`",
        " * with `groups` groups of `threads` threads (CUDA: grid and block; Metal: threadgroups and threads",
        " * per threadgroup; OpenCL: global size = groups x threads, local size = threads), arguments",
        " * (a, b, c, bias, ws, p): ws a zeroed buffer of `workspace_floats` floats that the kernel leaves",
        " * zero, p an MBParams filled from the spec. CUDA: a source that defines mb_dynamic_shared_bytes",
        " * (MB_DYNAMIC_SHARED) launches with that many bytes of dynamic shared memory, which past 48 KiB",
        " * needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES raised first; one that checks",
        " * __CUDA_ARCH_FEAT_SM90_ALL compiles for sm_90a. kind 'vendor': call `vendor` for this spec instead.",
        " * A quantized B (spec_key ending /quant=...): dispatch.json's `quant` says where its codes, scales",
        " * and biases lie in B's one buffer and the MBParams fields (ldb, stride_b, q*) that say so.",
        " * kind 'none': no variant was correct. */",
        "#ifndef METALBENCH_DISPATCH_H", "#define METALBENCH_DISPATCH_H", "",
        "/* The kernels' parameter block p, copied from metalbench's kernels/include/common.h. */",
        params_block(), "",
        "typedef struct {",
        "  const char* spec_key; /* metalbench's key: op/dtype/BxMxNxK/layout[/alpha=/beta=] */",
        "  int op;               /* MB_OP_* */",
        "  int dtype;            /* the data: 0 float32, 1 float16, 2 bfloat16 (the kernels' MB_DTYPE) */",
        "  int batch, m, n, k, trans_a, trans_b;",
        "  float alpha, beta;",
        "  const char* kind;     /* \"kernel\", \"vendor\", \"precompiled\" or \"none\" */",
        "  const char* vendor;   /* the library to call when kind is \"vendor\", else NULL */",
        "  const char* file;     /* the source beside this header, else NULL */",
        "  const char* entry;    /* the kernel's name in it */",
        "  unsigned int groups[3], threads[3];",
        "  unsigned long long workspace_floats;",
        "  double median_us;     /* as measured, by the ranking clock */",
        "} mb_dispatch_entry;", "",
        "static const mb_dispatch_entry mb_dispatch[] = {",
    ]
    for e in table["specs"]:
        s = e["spec"]
        groups = e.get("groups") or [0, 0, 0]
        threads = e.get("threads") or [0, 0, 0]
        median = (e.get("times", {}).get(table["rank_by"]) or {}).get("median_us", 0.0)
        op = f"MB_OP_{SHORT_OPS[s['op']].upper()}"
        lines.append(
            f"  {{{_c_string(e['spec_key'])}, {op}, {CODES[s['dtype']]}, {s['batch']}, "
            f"{s['m']}, {s['n']}, {s['k']}, {int(s['transpose_a'])}, {int(s['transpose_b'])}, {s['alpha']!r}f, "
            f"{s['beta']!r}f, {_c_string(e['kind'])}, {_c_string(e.get('library'))}, {_c_string(e.get('file'))}, "
            f"{_c_string(e.get('entry'))}, {{{', '.join(map(str, groups))}}}, {{{', '.join(map(str, threads))}}}, "
            f"{e.get('workspace_floats') or 0}ULL, {median!r}}},  /* [{e['spec_index']}] {comment_text(e['label'])}"
            f"{' (' + e['state'] + ')' if e.get('state') else ''} */")
    lines += ["};", f"#define MB_DISPATCH_COUNT {len(table['specs'])}", "", "#endif", ""]
    return "\n".join(lines)


def export_warnings(run: Run, report: Report) -> list[str]:
    """What an application must know before it ships this table: specs the run never
    reached, and specs whose best is of part of their variants."""
    unreached = [s.index for s in report.specs if s.state == "not reached"]
    partial = [s.index for s in report.specs if s.state == "incomplete"]
    out = []
    if unreached:
        out.append(f"run {run.id} is {run.status}: {len(unreached)} specs were never reached (specs "
                   f"{_indices(unreached)}); they are exported as kind 'none', state 'not reached'")
    if partial:
        out.append(f"run {run.id} is {run.status}: {len(partial)} specs were measured in part (specs "
                   f"{_indices(partial)}); their winner is the best of what was measured, state 'incomplete'")
    if out:
        out.append(f"`metalbench run` again with the same options finishes the run, reusing what run {run.id} "
                   "stored; then export the new run")
    return out


def _indices(indices: list[int]) -> str:
    return ", ".join(map(str, indices[:8])) + (f" and {len(indices) - 8} more" if len(indices) > 8 else "")


def write_export(run: Run, report: Report, variants: list[Variant], out: Path) -> Exported:
    """Writes the table, the header and the sources into folder `out` (made if missing)."""
    table, sources = build_table(run, report, variants)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    precompiled = {e["file"] for e in table["specs"] if e["kind"] == "precompiled"}
    for name, text in sources.items():
        path = out / name
        if name in precompiled:
            shutil.copyfile(text, path)
        else:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    (out / "dispatch.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    (out / "metalbench_dispatch.h").write_text(header_source(table), encoding="utf-8")
    return Exported(out / "dispatch.json", out / "metalbench_dispatch.h", written, table["specs"],
                    export_warnings(run, report))
