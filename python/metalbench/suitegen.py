"""A suite from a model's Hugging Face `config.json`: the GEMMs one decoder layer, the LM head and attention run.

`read_config` reads the sizes (and biases) a supported architecture's config gives,
`Workload` says what the model is doing (decode or prefill, how many tokens, which
context lengths), `products` turns both into specs and `render` writes them as a
suite file that `specs.load_suite` reads. `suite_from_config` does all four.

Layouts follow `metalbench.specs` (A is m x k, B is k x n, C is m x n, all
row-major; `transpose_b`: B is stored n x k) and the built-in
qwen2.5-0.5b-decode suite, which a Qwen2.5-0.5B config with that suite's context
lengths reproduces spec for spec, in its order:

- weight products (MLP, output projection, LM head): A holds the activations,
  B is the weight as a checkpoint stores it, out x in, so `transpose_b = true`;
- the fused Q/K/V projection: B stored in x out (`transpose_b = false`), as the
  trace behind the built-in suite recorded that product;
- q.K^T: one product per query head (batch); B is the key cache as stored,
  context x head_dim, so `transpose_b = true`; alpha scales the scores, beta = 1
  adds the mask held in C;
- P.V: one product per query head; B is the value cache as stored, context x
  head_dim (k x n); alpha = 1, beta = 0.
"""

from __future__ import annotations

import json
import math
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

from . import specs
from .errors import InputError

__all__ = ["ARCHITECTURES", "DECODE_CONTEXTS", "PHASES", "PREFILL_TOKENS", "ConfigError", "Model", "Product",
           "Workload", "default_name", "parse_config", "parse_lengths", "products", "read_config", "render",
           "suite_from_config"]

PHASES: tuple[str, ...] = ("decode", "prefill")
# Short, medium and long histories: where the fastest attention kernel tends to change.
DECODE_CONTEXTS: tuple[int, ...] = (256, 1024, 4096)
PREFILL_TOKENS = 512
_DTYPE = "float16"


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
    notes: tuple[str, ...] = ()

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
        scale=1.0 / math.sqrt(scaled_by),
        sliding_window=window if uses_window else None,  # type: ignore[arg-type]
        notes=tuple(notes),
    )


def read_config(path: str | Path) -> Model:
    """The Model a config.json file describes; ConfigError (one line: the file, and the field) if it cannot."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    return parse_config(data, path)


def parse_lengths(text: str, what: str = "--context") -> tuple[int, ...]:
    """`"256,1024"` -> (256, 1024); ValueError, naming `what`, for anything but positive integers."""
    lengths: list[int] = []
    for item in text.split(","):
        item = item.strip()
        # int() alone would take "+5" and "1_000"; a length is plain digits.
        if not item.isdecimal() or not item.isascii() or int(item) < 1:
            raise WorkloadError(f"{what}: lengths must be positive integers separated by commas, got {text!r}")
        lengths.append(int(item))
    return tuple(lengths)


@dataclass(frozen=True)
class Workload:
    """What the model is doing: its phase, tokens per step and the context lengths of the attention products.

    decode:  `tokens` sequences step together, one new token each (default 1):
             weight products have m = tokens; each sequence attends to its own
             cache, so attention has batch = tokens x heads and m = 1.
    prefill: one prompt of `tokens` tokens (default PREFILL_TOKENS): weight
             products and attention have m = tokens; the LM head runs on the
             last token only (m = 1), as generation needs only its logits.

    A context length counts the keys in the cache, the new tokens included.
    `make` gives both products every length of `context` (default: DECODE_CONTEXTS
    for decode, `tokens` for prefill, i.e. a prompt with nothing cached before
    it); `qk_context` or `pv_context` replaces that list for one product.
    """

    phase: str
    tokens: int
    qk_contexts: tuple[int, ...]
    pv_contexts: tuple[int, ...]

    @classmethod
    def make(cls, phase: str = "decode", tokens: int | None = None, context: tuple[int, ...] | None = None,
             qk_context: tuple[int, ...] | None = None, pv_context: tuple[int, ...] | None = None) -> Workload:
        """Fill in the defaults and check the values; ValueError names the option as the command line spells it."""
        if phase not in PHASES:
            raise WorkloadError(f"--phase: must be one of {', '.join(PHASES)}, got {phase!r}")
        if tokens is None:
            tokens = 1 if phase == "decode" else PREFILL_TOKENS
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise WorkloadError(f"--tokens: must be a positive integer, got {tokens!r}")
        both = context or (DECODE_CONTEXTS if phase == "decode" else (tokens,))
        qk, pv = tuple(qk_context or both), tuple(pv_context or both)
        for what, lengths in (("--context", both), ("--qk-context", qk), ("--pv-context", pv)):
            for length in lengths:
                if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                    raise WorkloadError(f"{what}: lengths must be positive integers, got {length!r}")
                if lengths.count(length) > 1:
                    # The same spec twice would be measured twice and reported twice.
                    raise WorkloadError(f"{what}: {length} is given twice")
                if phase == "prefill" and length < tokens:
                    # Every prompt token attends to the whole prompt up to itself.
                    raise WorkloadError(f"{what}: {length} is shorter than the prompt ({tokens} tokens); in prefill a "
                                     "context counts the prompt and anything cached before it")
        return cls(phase=phase, tokens=tokens, qk_contexts=qk, pv_contexts=pv)

    def options(self) -> str:
        """The `metalbench suite from-config` options that give this workload."""
        text = f"--phase {self.phase} --tokens {self.tokens}"
        if self.qk_contexts == self.pv_contexts:
            return text + f" --context {_lengths(self.qk_contexts)}"
        return text + f" --qk-context {_lengths(self.qk_contexts)} --pv-context {_lengths(self.pv_contexts)}"


def _lengths(lengths: tuple[int, ...]) -> str:
    return ",".join(map(str, lengths))


@dataclass(frozen=True)
class Product:
    """One spec of the suite and what it is in the model (the comment above it in the file)."""

    what: str
    spec: specs.Spec


def products(model: Model, workload: Workload) -> list[Product]:
    """The suite's specs, in the built-in qwen2.5-0.5b-decode suite's order: weights first, then attention.

    ConfigError if a product is too large for the kernels' int32 indexing.
    """
    t = workload.tokens
    decode = workload.phase == "decode"
    lm_m = t if decode else 1
    att_batch, att_m = (t * model.heads, 1) if decode else (model.heads, t)
    heads = f"{att_batch} = {t} x {model.heads} heads" if decode and t > 1 else f"{model.heads} heads"

    def weight(op_bias: bool) -> str:
        return "matmul_bias_add" if op_bias else "matmul"

    bias = " with its bias" if model.mlp_bias else ""
    plan: list[tuple[str, dict[str, object]]] = [
        (f"MLP gate and up projections, fused (2 x {model.intermediate} rows of the weight){bias}",
         dict(op=weight(model.mlp_bias), m=t, n=2 * model.intermediate, k=model.hidden, transpose_b=True)),
        (f"MLP down projection{bias}",
         dict(op=weight(model.mlp_bias), m=t, n=model.hidden, k=model.intermediate, transpose_b=True)),
        ("attention output projection" + (" with its bias" if model.o_bias else ""),
         dict(op=weight(model.o_bias), m=t, n=model.hidden, k=model.heads * model.head_dim, transpose_b=True)),
        ("LM head over the whole vocabulary" + ("" if decode else ", last prompt token only"),
         dict(op="matmul", m=lm_m, n=model.vocab, k=model.hidden, transpose_b=True)),
        (f"fused Q, K, V projection{' with its bias' if model.qkv_bias else ''} ({model.heads} + 2 x "
         f"{model.kv_heads} heads of {model.head_dim} outputs)",
         dict(op=weight(model.qkv_bias), m=t, n=model.qkv_size, k=model.hidden)),
    ]
    for length in workload.pv_contexts:
        plan.append((f"attention probabilities x V, {heads}: context {length}",
                     dict(op="matmul_alpha_beta", batch=att_batch, m=att_m, n=model.head_dim, k=length,
                          alpha=1.0, beta=0.0)))
    for length in workload.qk_contexts:
        plan.append((f"Q x K^T, {heads} (K stored context x head_dim): context {length}",
                     dict(op="matmul_alpha_beta", batch=att_batch, m=att_m, n=length, k=model.head_dim,
                          transpose_b=True, alpha=model.scale, beta=1.0)))
    made = []
    for what, fields in plan:
        try:
            made.append(Product(what, specs.Spec(**{"dtype": _DTYPE, "batch": 1, **fields})))  # type: ignore[arg-type]
        except specs.SpecError as e:
            raise ConfigError(f"{what}: {e}") from None
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


def render(model: Model, workload: Workload, made: list[Product], *, name: str, source: str | Path) -> str:
    """The suite file: a header saying where it came from and how it lays operands out, then one [[spec]] each."""
    m = model
    heads = f"{m.heads} query heads" + (f" and {m.kv_heads} key/value heads" if m.kv_heads != m.heads else "")
    biases = [what for what, on in (("Q, K, V", m.qkv_bias), ("the output projection", m.o_bias),
                                    ("the MLP", m.mlp_bias)) if on]
    t = workload.tokens
    if workload.phase == "decode" and t == 1:
        doing = "Decode step: one sequence, one new token (m = 1)."
        short = "m = 1"
    elif workload.phase == "decode":
        doing = (f"Decode step: {t} sequences together, one new token each (weight products m = {t}; attention "
                 f"batch = {t} x {m.heads} heads, m = 1, each sequence against its own cache).")
        short = f"m = {t}"
    else:
        doing = f"Prefill of one {t}-token prompt (m = {t}; the LM head on the last token only, m = 1)."
        short = f"{t}-token prompt"
    description = (f"{m.model_type} {workload.phase} from {Path(source).name}: projections, MLP, LM head, "
                   f"attention (fp16, {short})")
    facts = [
        f"{m.model_type}: hidden {m.hidden}, MLP {m.intermediate}, {heads} of {m.head_dim}, vocabulary {m.vocab}; "
        + (f"bias on {', '.join(biases)}." if biases else "no biases."),
        doing,
        f"Contexts: Q x K^T {_lengths(workload.qk_contexts)}; P x V {_lengths(workload.pv_contexts)} (keys in "
        "the cache, the new tokens included).",
        *(f"Assumed: {note}." for note in m.notes),
    ]
    longest = max(workload.qk_contexts + workload.pv_contexts)
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
        "#   Q x K^T: one product per query head (batch), B is the key cache, context x head_dim",
        f"#     (transpose_b = true); alpha = {m.scale!r} scales the scores, beta = 1 adds the mask held in C.",
        "#   P x V: one product per query head, B is the value cache, context x head_dim (k x n);",
        "#     alpha = 1, beta = 0. K and V are not shared across a key/value group's heads here.",
        "# Order: as the built-in suite's, weight products first, then attention.",
        "",
        f"name = {_toml_string(name)}",
        f"description = {_toml_string(description)}",
        f"dtype = {_toml_string(_DTYPE)}",
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
    return "\n".join(lines) + "\n"


def suite_from_config(config: str | Path, workload: Workload, name: str | None = None) -> str:
    """The suite file's text for the model `config` describes, doing `workload`; ConfigError if it cannot."""
    model = read_config(config)
    try:
        made = products(model, workload)
    except ConfigError as e:
        raise ConfigError(f"{config}: {e}") from None
    return render(model, workload, made, name=name or default_name(config, workload.phase), source=config)
