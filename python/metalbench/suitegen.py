"""A suite from a model's Hugging Face `config.json`: the GEMMs one decoder layer, the LM head and attention run.

`read_config` reads the sizes (and biases) a supported architecture's config gives,
`Workload` says what the model is doing (decode or prefill, how many tokens, how
attention runs, which context lengths), `products` turns both into specs and
`render` writes them as a suite file that `specs.load_suite` reads.
`suite_from_config` does all four.

Layouts follow `metalbench.specs` (A is m x k, B is k x n, C is m x n, all
row-major; `transpose_b`: B is stored n x k) and the built-in
qwen2.5-0.5b-decode suite, which a Qwen2.5-0.5B config with that suite's context
lengths and per-head attention reproduces spec for spec, in its order:

- weight products (MLP, output projection, LM head): A holds the activations,
  B is the weight as a checkpoint stores it, out x in, so `transpose_b = true`;
- the fused Q/K/V projection: B stored in x out (`transpose_b = false`), as the
  trace behind the built-in suite recorded that product;
- q.K^T: B is the key cache as stored, context x head_dim, so
  `transpose_b = true`; alpha scales the scores, beta = 1 adds the mask held in C;
- P.V: B is the value cache as stored, context x head_dim (k x n); alpha = 1,
  beta = 0.

Attention is one product per key/value head (grouped: A stacks the query heads
that share that K and V, so each is read once for its group) or per query head
(per-head: each K and V is read once per query head that uses it). Grouped is
the default where the config has fewer key/value heads than query heads. In
prefill grouped A is the group's heads one after another, each with a row per
prompt token: Q stored heads x tokens x head_dim, as per-head prefill already
takes it, makes that one contiguous block per group, and the causal mask stays
row by row in C.
"""

from __future__ import annotations

import json
import math
import shlex
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from . import quant as quantfmt
from . import specs
from .errors import InputError

__all__ = ["ARCHITECTURES", "ATTENTION", "DECODE_CONTEXTS", "PHASES", "PREFILL_TOKENS", "ConfigError", "Model",
           "Product", "Workload", "default_name", "parse_config", "parse_lengths", "products", "read_config",
           "render", "suite_from_config"]

PHASES: tuple[str, ...] = ("decode", "prefill")
# Short, medium and long histories: where the fastest attention kernel tends to change.
DECODE_CONTEXTS: tuple[int, ...] = (256, 1024, 4096)
PREFILL_TOKENS = 512
# --attention's values; the first is the default for a config whose query heads share key/value heads.
ATTENTION: tuple[str, ...] = ("grouped", "per-head")
# A config that names no dtype gets this one. Hugging Face configs name the checkpoint's
# dtype in `torch_dtype` (`dtype` from transformers 4.56 on, which wins where both are).
DEFAULT_DTYPE = "float16"
DTYPE_FIELDS: tuple[str, ...] = ("dtype", "torch_dtype")


class WorkloadError(InputError, ValueError):
    """A workload option (--phase, --tokens, --context, ...) that cannot be used; the message names it."""


class ConfigError(specs.SuiteError):
    """A config.json no suite can be made from; the message names the file and the field.

    A SuiteError, so that whatever reports a suite that cannot be loaded reports
    this one line too.
    """


@dataclass(frozen=True)
class _Family:
    # Each bias is fixed by the architecture's code (True/False) or switched by the
    # config field named here, which defaults to false.
    model_type: str
    architecture: str
    qkv_bias: bool | str
    o_bias: bool | str
    mlp_bias: bool | str
    # Where the config class's own default is not hidden_size / num_attention_heads
    # (Gemma: 256, Qwen3: 128), a config without head_dim is not guessed at.
    head_dim_required: bool = False
    # Gemma 2 scales scores by query_pre_attn_scalar ** -0.5, not head_dim ** -0.5.
    scale_field: str | None = None


_FAMILIES = {f.model_type: f for f in (
    _Family("qwen2", "Qwen2ForCausalLM", qkv_bias=True, o_bias=False, mlp_bias=False),
    _Family("qwen3", "Qwen3ForCausalLM", "attention_bias", "attention_bias", False, head_dim_required=True),
    _Family("llama", "LlamaForCausalLM", "attention_bias", "attention_bias", "mlp_bias"),
    _Family("mistral", "MistralForCausalLM", False, False, False),
    _Family("gemma", "GemmaForCausalLM", "attention_bias", "attention_bias", False, head_dim_required=True),
    _Family("gemma2", "Gemma2ForCausalLM", "attention_bias", "attention_bias", False, head_dim_required=True,
            scale_field="query_pre_attn_scalar"),
    _Family("phi3", "Phi3ForCausalLM", False, False, False),
)}
_BY_ARCHITECTURE = {f.architecture: f for f in _FAMILIES.values()}
ARCHITECTURES: tuple[str, ...] = tuple(sorted(_FAMILIES))


# A config.json is a few kilobytes; a file past this is something else (weights, a log).
MAX_CONFIG_BYTES = 16 << 20
# The range the score scale must fall in for each output dtype (smallest normal, largest
# finite: scores times alpha must stay normal and finite), and the range real models'
# scales fall well inside.
F16_SMALLEST, F16_LARGEST = 6.1e-5, 65504.0
SCALE_RANGE: dict[str, tuple[float, float]] = {"float16": (F16_SMALLEST, F16_LARGEST),
                                               "bfloat16": (1.2e-38, 3.38e38), "float32": (1.2e-38, 3.4e38)}
ALPHA_PLAUSIBLE = (1e-3, 10.0)
# How a warning starts in the suite file's header (cli_suite repeats these on stderr).
WARNING = "Warning:"


@dataclass(frozen=True)
class Model:
    """What a suite needs from a config.json: sizes, which products add a bias, the score scale.

    `notes` lists what was assumed where the config is silent, for the suite's header.
    """

    model_type: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    scale: float
    sliding_window: int | None = None
    # The checkpoint's weights as its config's `quantization` block says (mlx-community's
    # {"group_size": 64, "bits": 4}): a quant.py format name, or None.
    quant: str | None = None
    dtype: str = DEFAULT_DTYPE
    dtype_from: str | None = None  # the config field that gave `dtype`; None: not given, so the default
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # what looks wrong but can still be written (an odd score scale)

    @property
    def qkv_size(self) -> int:
        """Outputs of the fused Q/K/V projection: every query head, then one K and one V per key/value head."""
        return (self.heads + 2 * self.kv_heads) * self.head_dim


def _json(value: object) -> str:
    # Values as the config's author wrote them: `null`, `896.0`, `"896"`.
    return json.dumps(value)


def _field(data: dict[str, object], source: object, name: str, *, required: bool = True,
           why: str = "a positive integer is needed") -> int | None:
    """A positive integer field; None where it is absent (or null) and not required."""
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{source}: field '{name}': {'missing' if name not in data else 'null'}; {why}")
        return None
    # bool is an int to Python, and 896.0 might be a typo for anything: only integers are sizes.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: field '{name}': must be a positive integer, got {_json(value)}")
    return value


def _switch(data: dict[str, object], source: object, setting: bool | str) -> bool:
    if isinstance(setting, bool):
        return setting
    value = data.get(setting)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: field '{setting}': must be true or false, got {_json(value)}")
    return value


def _family(data: dict[str, object], source: object) -> _Family:
    model_type = data.get("model_type")
    if model_type is not None:
        if not isinstance(model_type, str):
            raise ConfigError(f"{source}: field 'model_type': must be a string, got {_json(model_type)}")
        if model_type not in _FAMILIES:
            raise ConfigError(f"{source}: field 'model_type': {model_type!r} is not supported "
                              f"(supported: {', '.join(ARCHITECTURES)})")
        return _FAMILIES[model_type]
    # Hand-written configs sometimes give only the class name.
    names = data.get("architectures")
    if isinstance(names, list):
        for name in names:
            if isinstance(name, str) and name in _BY_ARCHITECTURE:
                return _BY_ARCHITECTURE[name]
        raise ConfigError(f"{source}: field 'architectures': none of {_json(names)} is supported "
                          f"(supported: {', '.join(sorted(_BY_ARCHITECTURE))})")
    raise ConfigError(f"{source}: field 'model_type': missing (and no 'architectures' list); "
                      f"cannot tell the architecture (supported: {', '.join(ARCHITECTURES)})")


def _dtype(data: dict[str, object], source: object) -> tuple[str, str | None]:
    """The checkpoint's dtype and the field that gave it (DTYPE_FIELDS, first given wins), or
    the default and None."""
    for name in DTYPE_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or value not in specs.DTYPES:
            raise ConfigError(f"{source}: field '{name}': must be one of {', '.join(specs.DTYPES)}, got "
                              f"{_json(value)} (--dtype overrides it)")
        return value, name
    return DEFAULT_DTYPE, None


def check_scale(scale: float, dtype: str, where: str) -> None:
    """ConfigError unless scores of `dtype` times the score scale stay normal and finite."""
    low, high = SCALE_RANGE[dtype]
    if not low <= scale <= high:
        raise ConfigError(f"{where}: it makes the score scale alpha {scale:.3g}, which {dtype} cannot hold (it "
                          f"must be from {low:g} to {high:g})")


def parse_config(data: object, source: str | Path = "config.json") -> Model:
    """The Model a parsed config.json describes; ConfigError (naming `source` and the field) if it cannot."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a JSON object {{...}}, got {type(data).__name__}")
    family = _family(data, source)
    notes: list[str] = []
    hidden = _field(data, source, "hidden_size")
    heads = _field(data, source, "num_attention_heads")
    assert hidden is not None and heads is not None  # required fields are never None
    kv_heads = _field(data, source, "num_key_value_heads", required=False)
    if kv_heads is None:
        # transformers' own reading of a config without it: multi-head attention.
        kv_heads = heads
        notes.append(f"num_key_value_heads: not given, so {heads} (one per query head, as transformers reads it)")
    elif heads % kv_heads:
        raise ConfigError(f"{source}: field 'num_key_value_heads': must divide num_attention_heads ({heads}), "
                          f"got {kv_heads}")
    head_dim = _field(data, source, "head_dim", required=family.head_dim_required,
                      why=f"{family.model_type} configs give it, and it need not be hidden_size / num_attention_heads")
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(f"{source}: field 'head_dim': missing, and hidden_size {hidden} is not a multiple "
                              f"of num_attention_heads {heads}")
        head_dim = hidden // heads
        notes.append(f"head_dim: not given, so hidden_size / num_attention_heads = {head_dim}")
    scaled_by = head_dim
    if family.scale_field:
        value = data.get(family.scale_field)
        if value is None:
            notes.append(f"{family.scale_field}: not given, so head_dim ({head_dim})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"{source}: field '{family.scale_field}': must be a positive number, "
                              f"got {_json(value)}")
        else:
            scaled_by = value
    scale = 1.0 / math.sqrt(scaled_by)
    warnings: list[str] = []
    dtype, dtype_from = _dtype(data, source)
    # Real models scale by 1/sqrt(64..256), so anything far from 0.01..1 is worth a second look.
    check_scale(scale, dtype, f"{source}: field '{family.scale_field or 'head_dim'}'")
    if not ALPHA_PLAUSIBLE[0] <= scale <= ALPHA_PLAUSIBLE[1]:
        warnings.append(f"the score scale alpha is {scale:.3g} (1/sqrt({scaled_by:g}), from "
                        f"{family.scale_field or 'head_dim'}); models use 1/sqrt(64) to 1/sqrt(256), 0.06 to 0.125: "
                        "check the config")
    window = data.get("sliding_window")
    # Qwen2 configs carry a window they switch off with use_sliding_window = false.
    uses_window = isinstance(window, int) and not isinstance(window, bool) and window > 0 \
        and data.get("use_sliding_window", True) is not False
    return Model(
        model_type=family.model_type,
        hidden=hidden,
        intermediate=_field(data, source, "intermediate_size"),  # type: ignore[arg-type]
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=_field(data, source, "vocab_size"),  # type: ignore[arg-type]
        qkv_bias=_switch(data, source, family.qkv_bias),
        o_bias=_switch(data, source, family.o_bias),
        mlp_bias=_switch(data, source, family.mlp_bias),
        scale=scale,
        sliding_window=window if uses_window else None,  # type: ignore[arg-type]
        quant=_quantization(data, source),
        dtype=dtype,
        dtype_from=dtype_from,
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def _quantization(data: dict[str, object], source: object) -> str | None:
    """The format a config's `quantization` block names ({"group_size": 64, "bits": 4}, as
    mlx-community checkpoints carry it), or None without one."""
    block = data.get("quantization")
    if block is None:
        return None
    if not isinstance(block, dict) or "bits" not in block or "group_size" not in block:
        raise ConfigError(f"{source}: field 'quantization': must be an object with bits and group_size, "
                          f"got {_json(block)}")
    mode = block.get("mode", "affine")
    if mode != "affine":
        raise ConfigError(f"{source}: field 'quantization.mode': only MLX's affine quantization is supported, "
                          f"got {_json(mode)}")
    try:
        return quantfmt.parse(f"affine-q{block['bits']}-g{block['group_size']}").name
    except ValueError as e:
        raise ConfigError(f"{source}: field 'quantization': {e}") from None


def read_config(path: str | Path) -> Model:
    """The Model a config.json file describes; ConfigError (one line: the file, and the field) if it cannot."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes, more than a config.json holds (at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB): is it the model's weights?")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a model's config.json") from None
    return parse_config(data, path)


def parse_lengths(text: str, what: str = "--context", noun: str = "lengths") -> tuple[int, ...]:
    """`"256,1024"` -> (256, 1024); WorkloadError, naming `what`, for anything but positive integers."""
    lengths: list[int] = []
    for item in text.split(","):
        item = item.strip()
        # int() alone would take "+5" and "1_000"; a length is plain digits.
        if not item.isdecimal() or not item.isascii() or int(item) < 1:
            raise WorkloadError(f"{what}: {noun} must be positive integers separated by commas, got {text!r}")
        lengths.append(int(item))
    return tuple(lengths)


def _positive_distinct(what: str, values: tuple[object, ...], noun: str) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkloadError(f"{what}: {noun} must be positive integers, got {value!r}")
        if values.count(value) > 1:
            # The same spec twice would be measured twice and reported twice.
            raise WorkloadError(f"{what}: {value} is given twice")


@dataclass(frozen=True)
class Workload:
    """What the model is doing: its phase, tokens per step, how attention runs and the context lengths.

    decode:  `tokens` sequences step together, one new token each (default 1):
             weight products have m = tokens; each sequence attends to its own cache.
    prefill: one prompt of `tokens` tokens (default PREFILL_TOKENS): weight
             products have m = tokens; the LM head runs on the last token only
             (m = 1), as generation needs only its logits.
    Several token counts make one set of products each, one count after another.

    attention, for a model with heads query heads and kv_heads key/value heads
    (g = heads / kv_heads query heads share each K and V):
    grouped:  one product per key/value head, its group's query heads stacked in A
              (decode: batch = tokens x kv_heads, m = g; prefill: batch = kv_heads,
              m = g x tokens), so each K and V is read once for its group;
    per-head: one product per query head (decode: batch = tokens x heads, m = 1;
              prefill: batch = heads, m = tokens), which reads each K and V once
              per query head.
    None (the default) is grouped where kv_heads < heads, else per-head; with
    kv_heads = heads the two give the same products.

    A context length counts the keys in the cache, the new tokens included.
    `make` gives both products every length of `context` (default: DECODE_CONTEXTS
    for decode; for prefill None, each prompt's own length, nothing cached before
    it); `qk_context` or `pv_context` replaces that list for one product.
    """

    phase: str
    tokens: tuple[int, ...]
    qk_contexts: tuple[int, ...] | None
    pv_contexts: tuple[int, ...] | None
    attention: str | None = None
    # --quant: the weights' quantization (quant.py), where the config has none.
    quant: str | None = None
    dtype: str | None = None  # --dtype: overrides the config's; None: the config's

    @classmethod
    def make(cls, phase: str = "decode", tokens: int | tuple[int, ...] | None = None,
             context: tuple[int, ...] | None = None, qk_context: tuple[int, ...] | None = None,
             pv_context: tuple[int, ...] | None = None, attention: str | None = None,
             quant: str | None = None, dtype: str | None = None) -> Workload:
        """Fill in the defaults and check the values; WorkloadError names the option as the command line spells it."""
        if dtype is not None and dtype not in specs.DTYPES:
            raise WorkloadError(f"--dtype: must be one of {', '.join(specs.DTYPES)}, got {dtype!r}")
        if phase not in PHASES:
            raise WorkloadError(f"--phase: must be one of {', '.join(PHASES)}, got {phase!r}")
        if attention is not None and attention not in ATTENTION:
            raise WorkloadError(f"--attention: must be one of {', '.join(ATTENTION)}, got {attention!r}")
        if quant is not None:
            try:
                quant = quantfmt.parse(quant).name
            except ValueError as e:
                raise WorkloadError(f"--quant: {e}") from None
        if tokens is None:
            tokens = 1 if phase == "decode" else PREFILL_TOKENS
        counts = tuple(tokens) if isinstance(tokens, (tuple, list)) else (tokens,)
        if not counts:
            raise WorkloadError("--tokens: give at least one token count")
        _positive_distinct("--tokens", counts, "token counts")
        both = context or (DECODE_CONTEXTS if phase == "decode" else None)
        qk, pv = qk_context or both, pv_context or both
        longest = max(counts)
        for what, lengths in (("--context", both), ("--qk-context", qk), ("--pv-context", pv)):
            if lengths is None:
                continue
            _positive_distinct(what, tuple(lengths), "lengths")
            short = [n for n in lengths if n < longest]
            if phase == "prefill" and short:
                # Every prompt token attends to the whole prompt up to itself.
                raise WorkloadError(f"{what}: {short[0]} is shorter than the prompt ({longest} tokens); in prefill "
                                 "a context counts the prompt and anything cached before it")
        return cls(phase=phase, tokens=counts, qk_contexts=tuple(qk) if qk else None,
                   pv_contexts=tuple(pv) if pv else None, attention=attention, quant=quant, dtype=dtype)

    def contexts(self, tokens: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The Q x K^T and the P x V context lengths of the step with `tokens` tokens."""
        return self.qk_contexts or (tokens,), self.pv_contexts or (tokens,)

    def for_model(self, model: Model) -> Workload:
        """This workload with `attention` decided (grouped where the model's query heads share key/value heads)
        and `quant` the config's where --quant is not given; WorkloadError where the two differ."""
        out = self
        if model.quant is not None:
            if self.quant is not None and self.quant != model.quant:
                raise WorkloadError(f"--quant {self.quant}: the config's weights are already quantized as "
                                    f"{model.quant} (its field 'quantization'); leave --quant out or give that")
            out = replace(out, quant=model.quant)
        if out.attention is None:
            out = replace(out, attention="grouped" if model.kv_heads < model.heads else "per-head")
        return out

    def dtype_for(self, model: Model) -> tuple[str, str]:
        """The specs' dtype and where it came from, in words: --dtype, else the config's field, else the default."""
        if self.dtype is not None:
            return self.dtype, "--dtype"
        if model.dtype_from is not None:
            return model.dtype, f"the config's {model.dtype_from}"
        return model.dtype, f"the default: the config gives no {' or '.join(DTYPE_FIELDS)}"

    def options(self) -> str:
        """The `metalbench suite from-config` options that give this workload (defaults left out only where
        they depend on --tokens)."""
        text = f"--phase {self.phase} --tokens {_lengths(self.tokens)}"
        if self.quant:
            text += f" --quant {self.quant}"
        if self.dtype:
            text += f" --dtype {self.dtype}"
        if self.attention:
            text += f" --attention {self.attention}"
        if self.qk_contexts == self.pv_contexts:
            return text + (f" --context {_lengths(self.qk_contexts)}" if self.qk_contexts else "")
        for option, lengths in (("--qk-context", self.qk_contexts), ("--pv-context", self.pv_contexts)):
            if lengths:
                text += f" {option} {_lengths(lengths)}"
        return text


def _lengths(lengths: tuple[int, ...]) -> str:
    return ",".join(map(str, lengths))


@dataclass(frozen=True)
class Product:
    """One spec of the suite and what it is in the model (the comment above it in the file)."""

    what: str
    spec: specs.Spec


def _attention_shape(model: Model, workload: Workload, t: int) -> tuple[int, int, str]:
    """batch and m of the attention products of the step with `t` tokens, and those words for the comment."""
    heads, kv, g = model.heads, model.kv_heads, model.heads // model.kv_heads
    decode = workload.phase == "decode"
    if workload.attention == "per-head":
        if decode:
            return t * heads, 1, f"{t * heads} = {t} x {heads} heads" if t > 1 else f"{heads} heads"
        return heads, t, f"{heads} heads"
    if decode:
        words = f"{t * kv} = {t} x {kv} key/value heads" if t > 1 else f"{kv} key/value heads"
        return t * kv, g, f"{words}, {g} query heads each"
    return kv, g * t, f"{kv} key/value heads, {g} query heads x {t} tokens each"


def _step(model: Model, workload: Workload, t: int) -> list[tuple[str, dict[str, object]]]:
    """What the step with `t` tokens runs, in the built-in suite's order: weights first, then attention."""
    decode = workload.phase == "decode"
    att_batch, att_m, heads = _attention_shape(model, workload, t)
    # Quantized, every weight is stored out x in as MLX stores it, the fused Q, K, V too.
    q = {"quant": workload.quant} if workload.quant else {}

    def weight(op_bias: bool) -> str:
        return "matmul_bias_add" if op_bias else "matmul"

    bias = " with its bias" if model.mlp_bias else ""
    plan: list[tuple[str, dict[str, object]]] = [
        (f"MLP gate and up projections, fused (2 x {model.intermediate} rows of the weight){bias}",
         dict(op=weight(model.mlp_bias), m=t, n=2 * model.intermediate, k=model.hidden, transpose_b=True, **q)),
        (f"MLP down projection{bias}",
         dict(op=weight(model.mlp_bias), m=t, n=model.hidden, k=model.intermediate, transpose_b=True, **q)),
        ("attention output projection" + (" with its bias" if model.o_bias else ""),
         dict(op=weight(model.o_bias), m=t, n=model.hidden, k=model.heads * model.head_dim, transpose_b=True,
              **q)),
        ("LM head over the whole vocabulary" + ("" if decode else ", last prompt token only"),
         dict(op="matmul", m=t if decode else 1, n=model.vocab, k=model.hidden, transpose_b=True, **q)),
        (f"fused Q, K, V projection{' with its bias' if model.qkv_bias else ''} ({model.heads} + 2 x "
         f"{model.kv_heads} heads of {model.head_dim} outputs)",
         dict(op=weight(model.qkv_bias), m=t, n=model.qkv_size, k=model.hidden,
              **({"transpose_b": True, **q} if q else {}))),
    ]
    qk_contexts, pv_contexts = workload.contexts(t)
    for length in pv_contexts:
        plan.append((f"attention probabilities x V, {heads}: context {length}",
                     dict(op="matmul_alpha_beta", batch=att_batch, m=att_m, n=model.head_dim, k=length,
                          alpha=1.0, beta=0.0)))
    for length in qk_contexts:
        plan.append((f"Q x K^T, {heads} (K stored context x head_dim): context {length}",
                     dict(op="matmul_alpha_beta", batch=att_batch, m=att_m, n=length, k=model.head_dim,
                          transpose_b=True, alpha=model.scale, beta=1.0)))
    return plan


def _step_name(workload: Workload, t: int) -> str:
    if workload.phase == "decode":
        return f"{t} sequence{'s' if t > 1 else ''}"
    return f"{t}-token prompt"


def products(model: Model, workload: Workload) -> list[Product]:
    """The suite's specs: for each token count in turn, the built-in qwen2.5-0.5b-decode suite's order,
    weights first, then attention.

    ConfigError if a product is too large for the kernels' int32 indexing.
    """
    workload = workload.for_model(model)
    dtype, _ = workload.dtype_for(model)
    if dtype != model.dtype:
        check_scale(model.scale, dtype, "--dtype")
    made = []
    for t in workload.tokens:
        # With one token count the comments read as the built-in suite's do.
        prefix = f"{_step_name(workload, t)}: " if len(workload.tokens) > 1 else ""
        for what, fields in _step(model, workload, t):
            try:
                spec = specs.Spec(**{"dtype": dtype, "batch": 1, **fields})  # type: ignore[arg-type]
            except specs.SpecError as e:
                raise ConfigError(f"{prefix}{what}: {e}") from None
            made.append(Product(prefix + what, spec))
    return made


def _toml_string(text: str) -> str:
    # A TOML basic string: quote, backslash and control characters escaped, the rest as is.
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    # A comment ends at the line's end, and TOML allows no other control character in it.
    return "".join(ch if ch == "\t" or (ord(ch) >= 0x20 and ord(ch) != 0x7F) else "?" for ch in text)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip spelling, always with a '.' or an exponent
    return str(value)


def default_name(config: str | Path, phase: str) -> str:
    """The suite name for `config`: the file's stem, or its model's folder for a `config.json`, then the phase."""
    path = Path(config)
    stem = path.stem
    if stem == "config":
        parts = path.resolve().parent.parts
        # The Hugging Face cache keeps a model's files in models--ORG--NAME/snapshots/REVISION/.
        if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
            stem = parts[-3].split("--")[-1]
        elif parts and parts[-1] not in ("", "/"):
            stem = parts[-1]
    return f"{stem.lower()}-{phase}"



def _doing(workload: Workload) -> str:
    """The header's sentence on what the model is doing."""
    ts = workload.tokens
    ms = ", then ".join(f"m = {t}" for t in ts)
    each = ", then of ".join(map(str, ts))
    if workload.phase == "prefill":
        prompt = f"one {ts[0]}-token prompt" if len(ts) == 1 else f"one prompt of {each} tokens"
        return f"Prefill of {prompt} ({ms}; the LM head on the last token only, m = 1)."
    if ts == (1,):
        return "Decode step: one sequence, one new token (m = 1)."
    steps = f"Decode step: {ts[0]} sequences" if len(ts) == 1 else f"Decode steps of {each} sequences"
    return f"{steps} together, one new token each (weight products {ms}); each sequence attends to its own cache."


def _attention_facts(model: Model, workload: Workload) -> str:
    """The header's sentences on how attention runs and why (`workload` decided by for_model)."""
    heads, kv, g = model.heads, model.kv_heads, model.heads // model.kv_heads
    decode = workload.phase == "decode"
    if workload.attention == "grouped":
        shape = f"batch = tokens x {kv}, m = {g}" if decode else f"batch = {kv}, m = {g} x tokens"
        text = (f"Attention grouped (--attention grouped): the {g} query heads that share a key/value head form "
                f"one product ({shape}), so each K and V is read once for its group.")
        if g == 1:
            text += " With one query head per key/value head, these are the per-head products."
    else:
        shape = f"batch = tokens x {heads}, m = 1" if decode else f"batch = {heads}, m = tokens"
        text = (f"Attention per head (--attention per-head): one product per query head ({shape}), which reads "
                "each K and V once per query head" + (f", though {g} query heads share it." if g > 1 else "."))
    if g > 1:
        return text + f" Grouped is the default for this config ({kv} key/value heads for {heads} query heads)."
    return text + " Per-head is the default for this config (one key/value head per query head)."


def _layout(model: Model, workload: Workload) -> list[str]:
    """The header's lines on how the attention products lay out their operands."""
    alpha = f"alpha = {model.scale!r} scales the scores, beta = 1 adds the mask held in C"
    if workload.attention == "per-head":
        return [
            "#   Q x K^T: one product per query head (batch), B is the key cache, context x head_dim",
            f"#     (transpose_b = true); {alpha}.",
            "#   P x V: one product per query head, B is the value cache, context x head_dim (k x n);",
            "#     alpha = 1, beta = 0. K and V are not shared across a key/value group's heads here.",
        ]
    return [
        "#   Q x K^T: one product per key/value head (batch); A holds its group's query heads (decode: a",
        "#     row each; prefill: head after head, a row per prompt token each), B is the key cache,",
        "#     context x head_dim (transpose_b = true);",
        f"#     {alpha}, each row its own token's.",
        "#   P x V: one product per key/value head, A its group's probabilities, B the value cache,",
        "#     context x head_dim (k x n); alpha = 1, beta = 0. Each K and V is read once for its group.",
    ]


def render(model: Model, workload: Workload, made: list[Product], *, name: str, source: str | Path) -> str:
    """The suite file: a header saying where it came from, what it assumed and how it lays operands out,
    then one [[spec]] each."""
    m = model
    workload = workload.for_model(model)
    heads = f"{m.heads} query heads" + (f" and {m.kv_heads} key/value heads" if m.kv_heads != m.heads else "")
    biases = [what for what, on in (("Q, K, V", m.qkv_bias), ("the output projection", m.o_bias),
                                    ("the MLP", m.mlp_bias)) if on]
    ts = workload.tokens
    if workload.phase == "decode":
        short = "m = " + ", ".join(map(str, ts))
    else:
        short = f"{', '.join(map(str, ts))}-token prompt" + ("s" if len(ts) > 1 else "")
    attention = "grouped attention" if workload.attention == "grouped" and m.kv_heads < m.heads else "attention"
    dtype, dtype_from = workload.dtype_for(m)
    description = (f"{m.model_type} {workload.phase} from {Path(source).name}: projections, MLP, LM head, "
                   f"{attention} ({dtype}, {short})")
    prompts = "each prompt's length"
    qk = _lengths(workload.qk_contexts) if workload.qk_contexts else prompts
    pv = _lengths(workload.pv_contexts) if workload.pv_contexts else prompts
    facts = [
        f"{m.model_type}: hidden {m.hidden}, MLP {m.intermediate}, {heads} of {m.head_dim}, vocabulary {m.vocab}; "
        + (f"bias on {', '.join(biases)}." if biases else "no biases."),
        _doing(workload),
        _attention_facts(m, workload),
        f"dtype: {dtype}, from {dtype_from}.",
        (f"Contexts: Q x K^T {qk}; P x V {pv}" if qk != pv else f"Contexts: {qk} for Q x K^T and P x V")
        + " (keys in the cache, the new tokens included).",
        *([f"Weights quantized as MLX does, {workload.quant} ("
           + ("the config's quantization block" if m.quant else "--quant")
           + "): every weight product's B is stored out x in, the fused Q, K, V's too, whatever the layout "
           "below says; attention is not "
           "quantized."] if workload.quant else []),
        *(f"Assumed: {note}." for note in m.notes),
        *(f"{WARNING} {warning}." for warning in m.warnings),
    ]
    longest = max(max(qk + pv) for qk, pv in map(workload.contexts, ts))
    if m.sliding_window and longest > m.sliding_window:
        facts.append(f"Note: the config's sliding_window ({m.sliding_window}) caps the keys some or all layers "
                     "attend to; contexts above it are kept as given.")
    lines = [
        f"# Generated by `metalbench suite from-config` from {_comment(Path(source).name)}. To make it again:",
        # One line however long, so that it can be copied.
        f"#   metalbench suite from-config {_comment(shlex.quote(str(source)))} {workload.options()}"
        + ("" if name == default_name(source, workload.phase) else f" --name {_comment(shlex.quote(name))}"),
        "#",
    ]
    for fact in facts:
        lines += textwrap.wrap(_comment(fact), width=110, initial_indent="# ", subsequent_indent="#   ",
                               break_long_words=False, break_on_hyphens=False)
    lines += [
        "#",
        "# Layout (A is m x k, B is k x n, C is m x n, row-major; transpose_b: B stored n x k):",
        "#   MLP, output projection, LM head: B is the weight as checkpoints store it, out x in",
        "#     (transpose_b = true); a tied LM head's embedding table, vocabulary x hidden, is the same.",
        "#   Fused Q, K, V: B stored in x out (transpose_b = false), as in the built-in",
        "#     qwen2.5-0.5b-decode suite, whose trace recorded that product so.",
        *_layout(m, workload),
        "# Order: " + ("for each token count in turn, " if len(ts) > 1 else "")
        + "as the built-in suite's, weight products first, then attention.",
        "",
        f"name = {_toml_string(name)}",
        f"description = {_toml_string(description)}",
        f"dtype = {_toml_string(dtype)}",
    ]
    for product in made:
        s = product.spec
        lines += ["", f"# {_comment(product.what)}", "[[spec]]", f"op = {_toml_string(s.op)}"]
        if s.batch != 1:
            lines.append(f"batch = {s.batch}")
        lines += [f"m = {s.m}", f"n = {s.n}", f"k = {s.k}"]
        if s.transpose_a:
            lines.append("transpose_a = true")
        if s.transpose_b:
            lines.append("transpose_b = true")
        if s.op == "matmul_alpha_beta":
            lines += [f"alpha = {_value(s.alpha)}", f"beta = {_value(s.beta)}"]
        if s.quant:
            lines.append(f"quant = {_toml_string(s.quant)}")
    return "\n".join(lines) + "\n"


def suite_from_config(config: str | Path, workload: Workload, name: str | None = None) -> str:
    """The suite file's text for the model `config` describes, doing `workload`; ConfigError if it cannot."""
    model = read_config(config)
    try:
        made = products(model, workload)
    except ConfigError as e:
        raise ConfigError(f"{config}: {e}") from None
    return render(model, workload, made, name=name or default_name(config, workload.phase), source=config)
