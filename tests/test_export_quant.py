"""`metalbench export` of a run with quantized weights: dispatch.json says how to pack B
(format, where the codes, scales and biases lie in its buffer, the MBParams fields), and an
application that packs B and fills MBParams from that alone, with MLX's arrays, gets the
right answer from the exported source (on PoCL)."""

import json
import struct

import numpy as np
import pytest
from conftest import sweep

import metalbench
from metalbench import export, metrics, quant, variants
from metalbench.reference import ReferenceCache, make_inputs
from metalbench.specs import DTYPES, OPS, PARAMS_FIELDS, spec_from_key

SUITE = """
name = "quantized-export"
transpose_b = true
[[spec]]
op = "matmul"
m = 1
n = 40
k = 192
quant = "affine-q4-g64"
[[spec]]
op = "matmul_bias_add"
batch = 2
m = 1
n = 24
k = 256
quant = "affine-q3-g32"
dtype = "float32"
[[spec]]
op = "matmul"
m = 1
n = 32
k = 128
"""


@pytest.fixture(scope="module")
def exported(opencl, tmp_path_factory):
    root = tmp_path_factory.mktemp("qexport")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METALBENCH_CACHE_DIR", str(root / "cache"))
        run, rep = sweep(root, ["qgemv/b0_rpg8_tpr32_vpt32_fold", "simdgemv/nt_bn4_vec4"], suite=SUITE)
    done = export.write_export(run, rep, variants.load_variants(), root / "out")
    return root / "out", json.loads(done.table.read_text())


def test_a_quantized_spec_says_how_b_is_packed_and_an_unquantized_one_has_no_quant(exported):
    _, table = exported
    assert table["schema"] == export.EXPORT_SCHEMA
    first, second, plain = table["specs"]
    assert "quant" not in plain
    q = first["quant"]
    assert (q["format"], q["bits"], q["group"]) == ("affine-q4-g64", 4, 64)
    assert q["codes"] == {**q["codes"], "offset_bytes": 0, "bytes": 40 * 192 * 4 // 8, "type": "uint32", "rows": 40,
                          "words_per_row": 192 * 4 // 32}
    assert q["scales"]["count"] == q["biases"]["count"] == 40 * 3 and q["scales"]["type"] == "float16"
    assert q["scales"]["offset_bytes"] % 16 == 0 and q["biases"]["offset_bytes"] % 16 == 0
    assert q["params"] == {"ldb": 24, "stride_b": 40 * 24, "qbits": 4, "qgroup": 64,
                           "qscales": q["scales"]["offset_bytes"] // 2, "qbiases": q["biases"]["offset_bytes"] // 2}
    assert second["quant"]["scales"]["type"] == "float32" and second["quant"]["codes"]["rows"] == 2 * 24
    assert "/quant=" in first["spec_key"] and first["kind"] == "kernel"


def _params(entry: dict) -> bytes:
    """MBParams as an application fills it: the spec's fields, contiguous pitches, and the
    quantized B's fields from dispatch.json."""
    s = entry["spec"]
    values = {"batch": s["batch"], "m": s["m"], "n": s["n"], "k": s["k"], "lda": s["k"], "ldb": s["k"], "ldc": s["n"],
              "stride_a": s["m"] * s["k"], "stride_b": s["n"] * s["k"], "stride_c": s["m"] * s["n"],
              "trans_a": int(s["transpose_a"]), "trans_b": int(s["transpose_b"]), "op": OPS.index(s["op"]),
              "alpha": s["alpha"], "beta": s["beta"], "qbits": 0, "qgroup": 0, "qscales": 0, "qbiases": 0,
              "reserved": 0, **entry["quant"]["params"]}
    return struct.pack("<" + "".join(code for _, code in PARAMS_FIELDS), *(values[n] for n, _ in PARAMS_FIELDS))


def test_b_packed_from_dispatch_json_alone_gives_the_right_answer(exported):
    out_dir, table = exported
    device = metalbench.open_device("opencl")
    cache = ReferenceCache()
    for entry in [e for e in table["specs"] if "quant" in e]:
        spec = spec_from_key(entry["spec_key"])
        inputs = make_inputs(spec)
        q = entry["quant"]
        # B's buffer laid out as the entry says, from MLX's three arrays.
        b = np.zeros(q["buffer_bytes"], np.uint8)
        for part, array in (("codes", inputs.q.codes), ("scales", inputs.q.scales), ("biases", inputs.q.biases)):
            raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            b[q[part]["offset_bytes"]:q[part]["offset_bytes"] + raw.size] = raw
        assert q["codes"]["bytes"] == inputs.q.codes.nbytes
        kernel = device.compile((out_dir / entry["file"]).read_text(), entry["entry"], {}, f"exported/{entry['file']}")
        c0 = metrics.initial_c(spec, inputs)
        bias = inputs.bias if inputs.bias is not None else np.zeros(1, DTYPES[spec.dtype])
        bufs = []
        for array in (inputs.a, b, c0, bias):
            buf = device.allocate(max(4, array.nbytes))
            buf.write(np.ascontiguousarray(array))
            bufs.append(buf)
        ws = device.allocate(4 * max(1, entry["workspace_floats"]))
        ws.fill(0)
        params = _params(entry)
        assert params == spec.params()
        device.run(kernel, [*bufs, ws, params], entry["groups"], entry["threads"])
        out = np.empty_like(c0)
        bufs[2].read(out)
        ref, _ = cache.get(spec, inputs)
        assert metrics.check(spec, out, ref, c0).verdict == "ok", entry["file"]
    assert quant.parse(table["specs"][0]["quant"]["format"]).bits == 4
