"""`metalbench suite from-config`: a Hugging Face config.json in, a suite that loads out."""

import dataclasses
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metalbench import specs, suitegen
from metalbench.suitegen import ConfigError, Workload

DATA = Path(__file__).resolve().parent / "data"
QWEN = DATA / "qwen2.5-0.5b.json"
# The context lengths of the built-in suite's attention specs, as its trace recorded them.
QK = (51, 83, 90, 76, 80, 67, 73)
PV = (95, 16, 88, 83, 69, 67, 68, 84)
# The trace behind the built-in suite ran attention one query head at a time.
SEED = dict(qk_context=QK, pv_context=PV, attention="per-head", dtype="float16")  # traced in fp16 on MPS
SUITES = DATA.parents[1] / "python" / "metalbench" / "suites"


def write_suite(tmp_path, config, workload, name=None):
    path = tmp_path / "generated.toml"
    path.write_text(suitegen.suite_from_config(config, workload, name))
    return specs.load_suite(path)


def without_orig(suite):
    return [dataclasses.replace(s, orig=None) for s in suite.specs]


def by_what(made):
    return {p.what.split(":")[0].split(" (")[0]: p.spec for p in made}


def test_builtin_suite_contexts_are_the_ones_used_here():
    builtin = specs.load_suite("qwen2.5-0.5b-decode")
    attention = [s for s in builtin.specs if s.op == "matmul_alpha_beta"]
    assert tuple(s.n for s in attention if s.transpose_b) == QK
    assert tuple(s.k for s in attention if not s.transpose_b) == PV


def test_qwen_reproduces_the_builtin_suite_spec_for_spec(tmp_path):
    generated = write_suite(tmp_path, QWEN, Workload.make("decode", **SEED))
    builtin = specs.load_suite("qwen2.5-0.5b-decode")
    assert generated.name == builtin.name
    # Same specs in the same order: every field, alpha and beta included (not the recorded times).
    assert without_orig(generated) == without_orig(builtin)


def test_the_builtin_suite_is_not_what_the_default_attention_gives():
    # Qwen2.5-0.5B shares each K and V among 7 query heads, so grouped is its default.
    model = suitegen.read_config(QWEN)
    made = suitegen.products(model, Workload.make(qk_context=QK, pv_context=PV))
    attention = [p.spec for p in made if p.spec.op == "matmul_alpha_beta"]
    assert {(s.batch, s.m) for s in attention} == {(2, 7)}
    assert [s.spec for s in suitegen.products(model, Workload.make(attention="grouped", qk_context=QK,
                                                                    pv_context=PV))] == [p.spec for p in made]


def test_batched_decode_is_what_its_header_command_makes():
    text = (SUITES / "batched-decode.toml").read_text()
    args = recorded_command(text)
    assert args[:3] == ["suite", "from-config", "tests/data/qwen2.5-0.5b.json"]
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == text
    suite = specs.load_suite("batched-decode")
    builtin = specs.load_suite("qwen2.5-0.5b-decode").specs
    assert suite.name == "batched-decode" and len(suite.specs) == 14
    for step, t in zip((suite.specs[:7], suite.specs[7:]), (4, 16), strict=True):
        # The Qwen2.5-0.5B weights of the built-in suite, at m = t.
        assert [dataclasses.replace(s, orig=None) for s in step[:5]] == \
            [dataclasses.replace(s, m=t, orig=None) for s in builtin[:5]]
        # Grouped attention at context 1024: 2 key/value heads per sequence, 7 query heads each.
        pv, qk = step[5:]
        assert (pv.batch, pv.m, pv.n, pv.k, pv.layout, pv.beta) == (2 * t, 7, 64, 1024, "nn", 0.0)
        assert (qk.batch, qk.m, qk.n, qk.k, qk.layout, qk.alpha, qk.beta) == (2 * t, 7, 1024, 64, "nt", 0.125, 1.0)


def _attention_by_specs(made, q, k, v, mask, per_head_kv):
    """Scores and output of attention run as the suite's two products say, each operand a reshape of how the
    header says it is stored (no copy but the repeat that per-head attention reads K and V through)."""
    *_, pv, qk = (p.spec for p in made)
    if per_head_kv:
        k, v = (np.repeat(x, per_head_kv, axis=-3) for x in (k, v))
    a, b = q.reshape(qk.batch, qk.m, qk.k), k.reshape(qk.batch, qk.n, qk.k)  # K stored n x k: transpose_b
    scores = qk.alpha * a @ b.transpose(0, 2, 1) + qk.beta * mask.reshape(qk.batch, qk.m, qk.n)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    out = pv.alpha * p.reshape(pv.batch, pv.m, pv.k) @ v.reshape(pv.batch, pv.k, pv.n)
    return scores.reshape(mask.shape), out


@pytest.mark.parametrize("phase", suitegen.PHASES)
@pytest.mark.parametrize("attention", suitegen.ATTENTION)
def test_grouped_and_per_head_products_compute_attention(phase, attention):
    """Both ways give every query head its scores and output, with the header's layouts: decode Q stored
    sequences x heads x head_dim and the caches sequences x kv_heads x context x head_dim; prefill Q stored
    heads x tokens x head_dim and the caches kv_heads x context x head_dim; the mask in C as the scores."""
    heads, kv, hd, t, context = 6, 2, 8, 3, 5
    g = heads // kv
    model = suitegen.parse_config({"model_type": "llama", "hidden_size": heads * hd, "intermediate_size": 64,
                                   "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": 100})
    made = suitegen.products(model, Workload.make(phase, tokens=t, context=(context,), attention=attention))
    rng = np.random.default_rng(7)
    if phase == "decode":
        q, k, v = rng.standard_normal((t, heads, hd)), *rng.standard_normal((2, t, kv, context, hd))
        mask = np.zeros((t, heads, context))
        mask[0, :, 3:] = -np.inf  # the first sequence's cache holds 3 keys: padding masked
        want = [q[s, h] @ k[s, h // g].T * model.scale + mask[s, h] for s in range(t) for h in range(heads)]
    else:
        q, k, v = rng.standard_normal((heads, t, hd)), *rng.standard_normal((2, kv, context, hd))
        # Causal: the prompt's tokens come after context - t cached ones.
        causal = np.where(np.arange(context)[None, :] <= np.arange(t)[:, None] + context - t, 0.0, -np.inf)
        mask = np.broadcast_to(causal, (heads, t, context)).copy()
        want = [q[h] @ k[h // g].T * model.scale + mask[h] for h in range(heads)]
    scores, out = _attention_by_specs(made, q, k, v, mask, per_head_kv=g if attention == "per-head" else 0)
    np.testing.assert_allclose(scores, np.reshape(want, mask.shape), rtol=1e-12)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    want_out = [p[s, h] @ v[s, h // g] for s in range(t) for h in range(heads)] if phase == "decode" else \
        [p[h] @ v[h // g] for h in range(heads)]
    np.testing.assert_allclose(out.reshape(-1), np.ravel(want_out), rtol=1e-12)
    # Grouped reads each K and V once for its group; per-head once per query head.
    *_, pv, qk = (p.spec for p in made)
    assert qk.batch * qk.n * qk.k == (t if phase == "decode" else 1) * (kv if attention == "grouped" else heads) * \
        context * hd


def test_context_gives_both_products_and_the_overrides_one_each():
    model = suitegen.read_config(QWEN)
    made = suitegen.products(model, Workload.make(context=(256, 1024), attention="per-head"))
    qk = [p.spec for p in made if p.spec.op == "matmul_alpha_beta" and p.spec.transpose_b]
    pv = [p.spec for p in made if p.spec.op == "matmul_alpha_beta" and not p.spec.transpose_b]
    assert [s.n for s in qk] == [256, 1024] and [s.k for s in pv] == [256, 1024]
    assert all(s.batch == 14 and s.m == 1 and s.k == 64 and s.alpha == 0.125 and s.beta == 1.0 for s in qk)
    assert all(s.batch == 14 and s.m == 1 and s.n == 64 and s.alpha == 1.0 and s.beta == 0.0 for s in pv)
    made = suitegen.products(model, Workload.make(context=(256, 1024), qk_context=(7,), attention="per-head"))
    assert [p.spec.n for p in made if p.spec.transpose_b and p.spec.op == "matmul_alpha_beta"] == [7]
    assert [p.spec.k for p in made if not p.spec.transpose_b and p.spec.op == "matmul_alpha_beta"] == [256, 1024]


def test_decode_defaults():
    w = Workload.make()
    assert (w.phase, w.tokens, w.qk_contexts, w.pv_contexts, w.attention) == (
        "decode", (1,), suitegen.DECODE_CONTEXTS, suitegen.DECODE_CONTEXTS, None)


# Per test config: fused QKV (op, n, k), output projection k, fused gate/up n, vocabulary, head_dim,
# query heads, key/value heads, score scale. Sizes from the models' published config.json files.
EXPECTED = {
    "qwen2.5-0.5b.json": ("matmul_bias_add", 1152, 896, 896, 9728, 151936, 64, 14, 2, 1 / 8),
    "llama-3.2-1b.json": ("matmul", 3072, 2048, 2048, 16384, 128256, 64, 32, 8, 1 / 8),
    # Gemma 2: 8 x 256 = 2048 query outputs from hidden 2304; scores scaled by query_pre_attn_scalar.
    "gemma-2-2b.json": ("matmul", 4096, 2304, 2048, 18432, 256000, 256, 8, 4, 1 / 16),
    "mistral-7b-v0.1.json": ("matmul", 6144, 4096, 4096, 28672, 32000, 128, 32, 8, 1 / math.sqrt(128)),
    # Phi-3 mini: one key/value head per query head, so per-head is its default.
    "phi-3-mini-4k.json": ("matmul", 9216, 3072, 3072, 16384, 32064, 96, 32, 32, 1 / math.sqrt(96)),
}


@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_each_architecture_gives_a_suite_that_loads(tmp_path, config):
    qkv_op, qkv_n, hidden, o_k, gate_up, vocab, head_dim, heads, kv_heads, scale = EXPECTED[config]
    suite = write_suite(tmp_path, DATA / config, Workload.make(context=(100, 2000)))
    assert suite.name == config.removesuffix(".json") + "-decode"
    gate, down, o, lm, qkv, *attention = suite.specs
    assert (gate.n, gate.k, gate.op, gate.layout) == (gate_up, hidden, "matmul", "nt")
    assert (down.n, down.k, down.layout) == (hidden, gate_up // 2, "nt")
    assert (o.n, o.k, o.layout) == (hidden, o_k, "nt")
    assert (lm.n, lm.k, lm.op, lm.layout) == (vocab, hidden, "matmul", "nt")
    assert (qkv.op, qkv.n, qkv.k, qkv.layout) == (qkv_op, qkv_n, hidden, "nn")
    assert all(s.m == 1 for s in (gate, down, o, lm, qkv))
    pv, qk = attention[:2], attention[2:]
    # The default: one product per key/value head, the query heads that share it as A's rows.
    group = heads // kv_heads
    assert [(s.batch, s.m, s.n, s.k, s.layout, s.alpha, s.beta) for s in pv] == \
        [(kv_heads, group, head_dim, length, "nn", 1.0, 0.0) for length in (100, 2000)]
    assert [(s.batch, s.m, s.n, s.k, s.layout, s.beta) for s in qk] == \
        [(kv_heads, group, length, head_dim, "nt", 1.0) for length in (100, 2000)]
    assert all(s.alpha == pytest.approx(scale, rel=1e-15) for s in qk)
    header = (tmp_path / "generated.toml").read_text().split("\nname = ")[0]
    assert f"--attention {'grouped' if group > 1 else 'per-head'} " in header


def recorded_command(text):
    """The arguments of the `metalbench suite from-config` command a suite's header records."""
    header = text.split("\nname = ")[0]
    (command,) = [line for line in header.splitlines() if "metalbench suite from-config " in line]
    return shlex.split(command.split("metalbench ", 1)[1])


def test_header_documents_layouts_and_remakes_the_same_file(tmp_path):
    text = suitegen.suite_from_config(QWEN, Workload.make(**SEED))
    header = text.split("\nname = ")[0]
    assert all(line.startswith("#") or not line for line in header.splitlines())
    for words in ("transpose_b = true", "transpose_b = false", "key cache", "value cache", "alpha = 0.125",
                  "Assumed: head_dim", "--attention per-head", "once per query head, though 7 query heads share",
                  "Grouped is the default for this config (2 key/value heads for 14 query heads)"):
        # As one text: the header wraps its sentences.
        assert words in " ".join(line.lstrip("# ") for line in header.splitlines()), words
    again = cli(*recorded_command(text))
    assert again.returncode == 0, again.stderr
    assert again.stdout == text


# Each records a different set of options; every one must come back from its header's command.
@pytest.mark.parametrize("config, kwargs", [
    (QWEN, dict()),
    (QWEN, dict(tokens=(4, 16), context=(1024,))),
    (DATA / "llama-3.2-1b.json", dict(phase="prefill")),
    (DATA / "llama-3.2-1b.json", dict(phase="prefill", tokens=(128, 512), attention="per-head")),
    (DATA / "mistral-7b-v0.1.json", dict(phase="prefill", tokens=(64, 256), pv_context=(300,))),
    (DATA / "phi-3-mini-4k.json", dict(tokens=(2,), attention="grouped", qk_context=(5, 9))),
])
def test_the_recorded_command_makes_the_same_file(config, kwargs):
    text = suitegen.suite_from_config(config, Workload.make(**kwargs))
    again = cli(*recorded_command(text))
    assert again.returncode == 0, again.stderr
    assert again.stdout == text


def test_sliding_window_is_noted_where_a_context_passes_it():
    def header(config, contexts):
        return suitegen.suite_from_config(DATA / config, Workload.make(context=contexts)).split("\nname = ")[0]

    assert "sliding_window (4096)" in header("mistral-7b-v0.1.json", (4096, 8192))
    assert "sliding_window" not in header("mistral-7b-v0.1.json", (4096,))
    # Qwen2 configs give a window and switch it off.
    assert "sliding_window" not in header("qwen2.5-0.5b.json", (65536,))


def test_biases_switched_by_the_config(tmp_path):
    data = json.loads((DATA / "llama-3.2-1b.json").read_text())
    data.update(attention_bias=True, mlp_bias=True)
    model = suitegen.parse_config(data, "llama.json")
    assert (model.qkv_bias, model.o_bias, model.mlp_bias) == (True, True, True)
    gate, down, o, lm, qkv, *_ = suitegen.products(model, Workload.make(context=(64,)))
    assert [s.spec.op for s in (gate, down, o, qkv)] == ["matmul_bias_add"] * 4
    assert lm.spec.op == "matmul"
    # Qwen2 puts a bias on Q, K and V whatever the config says, and on nothing else.
    data = json.loads(QWEN.read_text())
    model = suitegen.parse_config({**data, "attention_bias": False}, "qwen.json")
    assert (model.qkv_bias, model.o_bias, model.mlp_bias) == (True, False, False)


def test_gemma2_scale_and_qwen3_head_dim():
    data = json.loads((DATA / "gemma-2-2b.json").read_text())
    assert suitegen.parse_config({**data, "query_pre_attn_scalar": 144}).scale == pytest.approx(1 / 12)
    without = {k: v for k, v in data.items() if k != "query_pre_attn_scalar"}
    model = suitegen.parse_config(without)
    assert model.scale == 1 / 16 and any("query_pre_attn_scalar" in note for note in model.notes)
    qwen3 = {"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "attention_bias": False}
    model = suitegen.parse_config(qwen3)
    assert (model.head_dim, model.qkv_size) == (128, 4096)
    o = suitegen.products(model, Workload.make(context=(64,)))[2].spec
    assert (o.n, o.k) == (1024, 2048)


def test_architecture_from_the_class_name_and_default_kv_heads():
    data = {k: v for k, v in json.loads(QWEN.read_text()).items() if k not in ("model_type", "num_key_value_heads")}
    model = suitegen.parse_config(data)
    assert model.model_type == "qwen2" and model.qkv_bias
    assert model.kv_heads == 14 and any("num_key_value_heads" in note for note in model.notes)


def test_decode_with_several_sequences():
    model = suitegen.read_config(QWEN)
    made = suitegen.products(model, Workload.make(tokens=4, context=(300,), attention="per-head"))
    gate, down, o, lm, qkv, pv, qk = (p.spec for p in made)
    assert all(s.m == 4 for s in (gate, down, o, lm, qkv))
    # Each sequence attends to its own cache: one more batch entry per sequence, not a taller A.
    assert (pv.batch, pv.m, pv.n, pv.k) == (56, 1, 64, 300)
    assert (qk.batch, qk.m, qk.n, qk.k) == (56, 1, 300, 64)
    *_, pv, qk = (p.spec for p in suitegen.products(model, Workload.make(tokens=4, context=(300,))))
    assert (pv.batch, pv.m, pv.n, pv.k) == (8, 7, 64, 300)
    assert (qk.batch, qk.m, qk.n, qk.k) == (8, 7, 300, 64)


def test_several_token_counts_one_set_each_in_turn():
    model = suitegen.read_config(QWEN)
    made = suitegen.products(model, Workload.make(tokens=(4, 16), context=(1024,)))
    assert len(made) == 14
    for step, t in zip((made[:7], made[7:]), (4, 16), strict=True):
        assert all(p.what.startswith(f"{t} sequences: ") for p in step)
        assert [p.spec.m for p in step[:5]] == [t] * 5
        assert [(p.spec.batch, p.spec.m) for p in step[5:]] == [(2 * t, 7)] * 2
    # One token count reads as the built-in suite does: no prefix.
    assert suitegen.products(model, Workload.make(tokens=4))[0].what.startswith("MLP gate")


def test_phi3_grouped_and_per_head_are_the_same_products():
    model = suitegen.read_config(DATA / "phi-3-mini-4k.json")
    for phase in suitegen.PHASES:
        made = {a: [p.spec for p in suitegen.products(model, Workload.make(phase, tokens=8, attention=a))]
                for a in suitegen.ATTENTION}
        assert made["grouped"] == made["per-head"]


def test_prefill(tmp_path):
    workload = Workload.make("prefill")
    assert (workload.tokens, workload.contexts(512)) == ((512,), ((512,), (512,)))
    suite = write_suite(tmp_path, QWEN, workload)
    assert suite.name == "qwen2.5-0.5b-prefill"
    gate, down, o, lm, qkv, pv, qk = suite.specs
    assert all(s.m == 512 for s in (gate, down, o, qkv))
    assert lm.m == 1  # generation needs the last token's logits only
    # Grouped: per key/value head, its 7 query heads' 512 rows each, one after another.
    assert (pv.batch, pv.m, pv.n, pv.k) == (2, 7 * 512, 64, 512)
    assert (qk.batch, qk.m, qk.n, qk.k, qk.beta) == (2, 7 * 512, 512, 64, 1.0)
    *_, pv, qk = write_suite(tmp_path, QWEN, Workload.make("prefill", attention="per-head")).specs
    assert (pv.batch, pv.m, pv.n, pv.k) == (14, 512, 64, 512)
    assert (qk.batch, qk.m, qk.n, qk.k, qk.beta) == (14, 512, 512, 64, 1.0)
    # A prompt appended to a cache: contexts longer than the prompt.
    made = suitegen.products(suitegen.read_config(QWEN), Workload.make("prefill", tokens=128, context=(128, 640)))
    assert [p.spec.n for p in made if p.spec.transpose_b and p.spec.op == "matmul_alpha_beta"] == [128, 640]
    # Several prompts: by default each attends to itself only.
    made = suitegen.products(suitegen.read_config(QWEN), Workload.make("prefill", tokens=(64, 256)))
    assert [(p.spec.m, p.spec.n) for p in made if p.spec.transpose_b and p.spec.op == "matmul_alpha_beta"] == \
        [(7 * 64, 64), (7 * 256, 256)]
    assert [p.spec.m for p in made if p.what.endswith("last prompt token only")] == [1, 1]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(phase="training"), "--phase"),
    (dict(tokens=0), "--tokens: token counts must be positive integers, got 0"),
    (dict(tokens=True), "--tokens"),
    (dict(tokens=()), "--tokens: give at least one"),
    (dict(tokens=(4, 16, 4)), "--tokens: 4 is given twice"),
    (dict(attention="grouped-query"), "--attention: must be one of grouped, per-head, got 'grouped-query'"),
    (dict(attention="per_head"), "--attention"),
    (dict(phase="prefill", tokens=(64, 512), context=(256,)),
     r"--context: 256 is shorter than the prompt \(512 tokens\)"),
    (dict(context=(0,)), "--context"),
    (dict(context=(64, 128, 64)), "--context: 64 is given twice"),
    (dict(qk_context=(8, 8)), "--qk-context: 8 is given twice"),
    (dict(phase="prefill", tokens=512, context=(256,)), "--context: 256 is shorter than the prompt"),
    (dict(phase="prefill", tokens=64, pv_context=(32,)), "--pv-context"),
])
def test_bad_workloads(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Workload.make(**kwargs)


def test_parse_lengths():
    assert suitegen.parse_lengths("256,1024") == (256, 1024)
    assert suitegen.parse_lengths(" 5 , 7") == (5, 7)
    for text in ("", "0", "-4", "12,abc", "1.5", "+3", "1_000", "4,,8", "²"):
        with pytest.raises(ValueError, match="--qk-context: lengths must be positive integers"):
            suitegen.parse_lengths(text, "--qk-context")


QWEN_DATA = json.loads(QWEN.read_text())


@pytest.mark.parametrize("text, needle", [
    ("{", "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
    ("[1, 2]", "must be a JSON object {...}, got list"),
    (json.dumps({k: v for k, v in QWEN_DATA.items() if k != "hidden_size"}), "field 'hidden_size': missing"),
    (json.dumps({**QWEN_DATA, "hidden_size": 896.0}), "field 'hidden_size': must be a positive integer, got 896.0"),
    (json.dumps({**QWEN_DATA, "vocab_size": "151936"}), "field 'vocab_size': must be a positive integer, got \"1519"),
    (json.dumps({**QWEN_DATA, "num_attention_heads": True}), "field 'num_attention_heads': must be a positive integer"),
    (json.dumps({**QWEN_DATA, "intermediate_size": -4864}), "field 'intermediate_size': must be a positive integer"),
    (json.dumps({**QWEN_DATA, "intermediate_size": None}), "field 'intermediate_size': null"),
    (json.dumps({**QWEN_DATA, "num_key_value_heads": 3}), "field 'num_key_value_heads': must divide"),
    (json.dumps({**QWEN_DATA, "hidden_size": 900}), "field 'head_dim': missing, and hidden_size 900"),
    (json.dumps({**QWEN_DATA, "model_type": "gpt2"}), "field 'model_type': 'gpt2' is not supported (supported: gemma"),
    (json.dumps({**QWEN_DATA, "model_type": 2}), "field 'model_type': must be a string"),
    (json.dumps({k: v for k, v in QWEN_DATA.items() if k != "model_type"} | {"architectures": ["GPT2LMHeadModel"]}),
     "field 'architectures': none of [\"GPT2LMHeadModel\"] is supported"),
    (json.dumps({k: v for k, v in QWEN_DATA.items() if k not in ("model_type", "architectures")}),
     "field 'model_type': missing"),
    (json.dumps({**QWEN_DATA, "model_type": "llama", "attention_bias": "no"}),
     "field 'attention_bias': must be true or false"),
    (json.dumps({**QWEN_DATA, "model_type": "gemma2", "head_dim": None}), "field 'head_dim': null; gemma2 configs"),
    (json.dumps({**QWEN_DATA, "model_type": "gemma2", "head_dim": 64, "query_pre_attn_scalar": 0}),
     "field 'query_pre_attn_scalar': must be a positive number"),
    # The LM head's weight would hold more elements than the kernels' int32 offsets reach.
    (json.dumps({**QWEN_DATA, "vocab_size": 3_000_000}), "LM head over the whole vocabulary: fields"),
])
def test_bad_configs_are_one_line_naming_file_and_field(tmp_path, text, needle):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        suitegen.suite_from_config(path, Workload.make())
    message = str(info.value)
    assert isinstance(info.value, specs.SuiteError)
    assert message.startswith(f"{path}: ") and needle in message and "\n" not in message, message


def test_unreadable_configs(tmp_path):
    with pytest.raises(ConfigError, match="missing.json: cannot read: No such file"):
        suitegen.read_config(tmp_path / "missing.json")
    (tmp_path / "latin1.json").write_bytes(b'{"model_type": "caf\xe9"}')
    with pytest.raises(ConfigError, match=r"latin1.json: not UTF-8 text \(byte 19\)"):
        suitegen.read_config(tmp_path / "latin1.json")


def test_names_are_escaped_and_default_names(tmp_path):
    name = 'my "model"\\ \n\x7f two'
    suite = write_suite(tmp_path, QWEN, Workload.make(context=(64,)), name=name)
    assert suite.name == name
    snapshot = tmp_path / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / ("0" * 40) / "config.json"
    assert suitegen.default_name(snapshot, "decode") == "qwen2.5-0.5b-decode"
    assert suitegen.default_name(tmp_path / "Llama-3.2-1B" / "config.json", "prefill") == "llama-3.2-1b-prefill"
    assert suitegen.default_name("gemma.json", "decode") == "gemma-decode"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "metalbench", *args], capture_output=True, text=True, timeout=120,
                          cwd=DATA.parents[1])


def test_cli_writes_a_suite_that_loads(tmp_path):
    out = tmp_path / "qwen.toml"
    result = cli("suite", "from-config", str(QWEN), "--qk-context", ",".join(map(str, QK)),
                 "--pv-context", ",".join(map(str, PV)), "--attention", "per-head", "--dtype", "float16",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and f"wrote 20 specs to {out}" in result.stderr
    assert "metalbench: dtype float16, from --dtype\n" in result.stderr
    assert without_orig(specs.load_suite(out)) == without_orig(specs.load_suite("qwen2.5-0.5b-decode"))


def test_readme_commands_give_the_builtin_suites(tmp_path):
    readme = (DATA.parents[1] / "README.md").read_text()
    seed, batched = [line for line in readme.splitlines() if line.startswith("metalbench suite from-config tests/")]
    out = tmp_path / "readme.toml"
    result = cli(*shlex.split(seed)[1:], "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert without_orig(specs.load_suite(out)) == without_orig(specs.load_suite("qwen2.5-0.5b-decode"))
    result = cli(*shlex.split(batched)[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (SUITES / "batched-decode.toml").read_text()


@pytest.mark.parametrize("args, needle", [
    (["{bad}"], "bad.json: not valid JSON"),
    ([str(QWEN), "--dtype", "float64"], "--dtype: must be one of float16, float32, bfloat16, got 'float64'"),
    ([str(QWEN), "--dtype", "bf16"], "--dtype: must be one of float16, float32, bfloat16"),
    ([str(DATA / "missing.json")], "missing.json: cannot read"),
    ([str(QWEN), "--context", "64,x"], "--context: lengths must be positive integers"),
    ([str(QWEN), "--tokens", "0"], "--tokens: token counts must be positive integers separated by commas"),
    ([str(QWEN), "--tokens", "4,x"], "--tokens: token counts must be positive integers separated by commas"),
    ([str(QWEN), "--tokens", "4,16,4"], "--tokens: 4 is given twice"),
    ([str(QWEN), "--attention", "gqa"], "--attention: must be one of grouped, per-head, got 'gqa'"),
    ([str(QWEN), "--attention", "Grouped"], "--attention: must be one of grouped, per-head"),
    ([str(QWEN), "--attention"], "'--attention' requires an argument"),
    ([str(QWEN), "--phase", "train"], "--phase: must be one of decode, prefill"),
    ([str(QWEN), "--phase", "prefill", "--context", "100"], "--context: 100 is shorter than the prompt"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, needle):
    if args == ["{bad}"]:
        (tmp_path / "bad.json").write_text('{"hidden_size": 896,}')
        args = [str(tmp_path / "bad.json")]
    # --out first, so that an option given last without its value has none to take.
    result = cli("suite", "from-config", "--out", str(tmp_path / "out.toml"), *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalbench: error: ") and needle in lines[0], lines
    assert not (tmp_path / "out.toml").exists()


# ---- the specs' dtype: the config's torch_dtype (or dtype), --dtype over both ----

def _config_with(tmp_path, **fields):
    data = json.loads(QWEN.read_text())
    data.pop("torch_dtype", None)
    data.update(fields)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_the_config_dtype_is_read_and_said(tmp_path):
    assert json.loads(QWEN.read_text())["torch_dtype"] == "bfloat16"
    result = cli("suite", "from-config", str(QWEN), "--out", str(tmp_path / "q.toml"))
    assert result.returncode == 0, result.stderr
    assert "metalbench: dtype bfloat16, from the config's torch_dtype\n" in result.stderr
    suite = specs.load_suite(tmp_path / "q.toml")
    assert {s.dtype for s in suite.specs} == {"bfloat16"}
    assert "(bfloat16, m = 1)" in suite.description
    assert "# dtype: bfloat16, from the config's torch_dtype." in (tmp_path / "q.toml").read_text()


@pytest.mark.parametrize("fields, want, source", [
    ({"torch_dtype": "float32"}, "float32", "the config's torch_dtype"),
    ({"dtype": "bfloat16", "torch_dtype": "float16"}, "bfloat16", "the config's dtype"),  # transformers >= 4.56
    ({}, "float16", "the default: the config gives no dtype or torch_dtype"),
    ({"torch_dtype": None}, "float16", "the default"),
])
def test_which_dtype_and_where_from(tmp_path, fields, want, source):
    model = suitegen.read_config(_config_with(tmp_path, **fields))
    dtype, said = Workload.make().dtype_for(model)
    assert dtype == want and said.startswith(source)
    assert {p.spec.dtype for p in suitegen.products(model, Workload.make())} == {want}
    # --dtype overrides whatever the config says.
    assert Workload.make(dtype="float32").dtype_for(model) == ("float32", "--dtype")
    assert {p.spec.dtype for p in suitegen.products(model, Workload.make(dtype="float32"))} == {"float32"}


@pytest.mark.parametrize("fields, needle", [
    ({"torch_dtype": "int8"}, "field 'torch_dtype': must be one of float16, float32, bfloat16, got \"int8\""),
    ({"torch_dtype": 16}, "field 'torch_dtype': must be one of float16, float32, bfloat16, got 16"),
    ({"dtype": "auto"}, "field 'dtype': must be one of float16, float32, bfloat16, got \"auto\""),
])
def test_a_bad_config_dtype_is_one_line_exit_2_and_nothing_written(tmp_path, fields, needle):
    config = _config_with(tmp_path, **fields)
    out = tmp_path / "out.toml"
    result = cli("suite", "from-config", str(config), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{config}: {needle}" in lines[0], lines
    assert not out.exists()
    # --dtype does not rescue it silently: the config is still wrong, and says so.
    assert cli("suite", "from-config", str(config), "--dtype", "float16").returncode == 2


def test_the_score_scale_is_checked_against_the_dtype_used(tmp_path):
    # head_dim 2^40: alpha 2^-20 is below float16's normal range but fine in bfloat16.
    config = _config_with(tmp_path, head_dim=2**40, torch_dtype="bfloat16")
    model = suitegen.read_config(config)
    assert model.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="--dtype: it makes the score scale alpha .* which float16 cannot hold"):
        suitegen.products(model, Workload.make(dtype="float16"))
