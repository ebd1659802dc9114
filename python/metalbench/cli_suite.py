"""`metalbench suite ...`: make suite files. `from-config` writes one from a model's config.json."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import specs, suitegen

suite_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Make suite files.")


_LENGTHS = "L,..."


@suite_app.command("from-config")
def from_config(
    config: Annotated[Path, typer.Argument(help="A Hugging Face config.json (supported model_type: "
                                           f"{', '.join(suitegen.ARCHITECTURES)}).", show_default=False)],
    # Checked by Workload.make rather than by typer, so that a wrong value is the
    # same one-line error as every other (cli.main's USER_ERRORS).
    phase: Annotated[str, typer.Option(metavar="decode|prefill", help="decode: one new token per sequence and "
                                       "step. prefill: one prompt of --tokens tokens.")] = "decode",
    tokens: Annotated[str | None, typer.Option(metavar="N,...", help="decode: sequences decoded together "
                                               "(weight products m = N), default 1. prefill: the prompt's length "
                                               f"(m = N), default {suitegen.PREFILL_TOKENS}. Several counts make "
                                               "one set of specs each.", show_default=False)] = None,
    attention: Annotated[str | None, typer.Option(metavar="grouped|per-head", help="grouped: one product per "
                                                  "key/value head, the query heads that share it stacked as A's "
                                                  "rows (decode batch = N x kv_heads, m = heads / kv_heads; "
                                                  "prefill batch = kv_heads, m = N x heads / kv_heads), so each "
                                                  "K and V is read once for its group. per-head: one product per "
                                                  "query head (decode batch = N x heads, m = 1; prefill batch = "
                                                  "heads, m = N). Default: grouped where the config has fewer "
                                                  "key/value heads than query heads, else per-head.",
                                                  show_default=False)] = None,
    context: Annotated[str | None, typer.Option(metavar=_LENGTHS, help="Context lengths (keys in the cache, the "
                                                "new tokens included): one Q x K^T and one P x V spec per length. "
                                                "Default: decode "
                                                f"{','.join(map(str, suitegen.DECODE_CONTEXTS))}; prefill "
                                                "each prompt's length (nothing cached before it).",
                                                show_default=False)] = None,
    qk_context: Annotated[str | None, typer.Option(metavar=_LENGTHS, help="Context lengths for Q x K^T only "
                                                   "(replaces --context for it).", show_default=False)] = None,
    pv_context: Annotated[str | None, typer.Option(metavar=_LENGTHS, help="Context lengths for P x V only "
                                                   "(replaces --context for it).", show_default=False)] = None,
    quant: Annotated[str | None, typer.Option(metavar="affine-qB-gG", help="Quantize the weight products as MLX "
                                              "does (bits B: 2, 3, 4, 5, 6, 8; group G: 32, 64, 128), e.g. "
                                              "affine-q4-g64. Default: the config's quantization block where it "
                                              "has one, else none.", show_default=False)] = None,
    dtype: Annotated[str | None, typer.Option(metavar="|".join(specs.DTYPES), help="The specs' dtype. Default: "
                                              "the config's dtype (or torch_dtype) field, else "
                                              f"{suitegen.DEFAULT_DTYPE}.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Suite name (default: the config file's name, or its model "
                                             "folder's for config.json, then the phase).",
                                             show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the suite here (default: standard output).",
                                             metavar="SUITE.toml", show_default=False)] = None,
) -> None:
    """Write a suite of the GEMMs a model runs, from its Hugging Face config.json.

    The Q/K/V (fused), output, MLP gate/up (fused) and down projections, the LM
    head, and per context length the attention score (Q x K^T) and value (P x V)
    products as batched alpha/beta GEMMs, for each --tokens count in turn. The
    file's header records the command that makes it again, what was assumed,
    and how each operand is laid out.
    """
    workload = suitegen.Workload.make(
        phase=phase, attention=attention,
        tokens=suitegen.parse_lengths(tokens, "--tokens", "token counts") if tokens is not None else None,
        context=suitegen.parse_lengths(context, "--context") if context is not None else None,
        qk_context=suitegen.parse_lengths(qk_context, "--qk-context") if qk_context is not None else None,
        pv_context=suitegen.parse_lengths(pv_context, "--pv-context") if pv_context is not None else None,
        quant=quant,
        dtype=dtype,
    )
    text = suitegen.suite_from_config(config, workload, name)
    model = suitegen.read_config(config)
    for warning in model.warnings:  # in the file's header too
        print(f"metalbench: warning: {config}: {warning}", file=sys.stderr)
    used, source = workload.dtype_for(model)
    print(f"metalbench: dtype {used}, from {source}", file=sys.stderr)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise specs.SuiteError(f"{out}: cannot write: {e.strerror or e}") from None
    count = text.count("\n[[spec]]\n")
    print(f"wrote {count} specs to {out}; run them with: metalbench run --suite {out}", file=sys.stderr)
