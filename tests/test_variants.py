import textwrap

import pytest

from metalbench import backends, variants
from metalbench.specs import Spec
from metalbench.variants import ManifestError, expand, load_families, load_variants, parse_family, select


def write_family(folder, text, body="MB_KERNEL(mine) { }\n", source="mine.c"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / source).write_text(body)
    path = folder / "mine.toml"
    path.write_text(textwrap.dedent(text))
    return path


BASE = """
name = "mine"
source = "mine.c"
entry = "mine"
backends = ["opencl"]
config = "bn{BN}_tg{TG}"
[grid]
BN = [1, 2]
TG = [32, 64]
[dispatch]
groups = ["ceil_div(n, BN)", 1, "batch"]
threads = ["TG"]
"""


def test_builtin_families_load_with_unique_stable_ids():
    every = load_variants()
    ids = [v.id for v in every]
    assert len(ids) == len(set(ids))
    assert "naive/default" in ids
    assert ids == [v.id for v in load_variants()]
    for v in every:
        assert v.id.startswith(v.family.name + "/")


def test_grid_expansion_names_and_where(tmp_path):
    path = write_family(tmp_path, BASE.replace("[grid]", 'where = ["TG >= 32 * BN"]\n[grid]'))
    family = parse_family(path)
    assert [v.config for v in expand(family)] == ["bn1_tg32", "bn1_tg64", "bn2_tg64"]


def test_defines_geometry_and_support(tmp_path):
    text = BASE.replace('config = "bn{BN}_tg{TG}"', 'config = "bn{BN}_tg{TG}_{layout}"').replace(
        "TG = [32, 64]", 'TG = [32]\nlayout = ["nt"]'
    )
    text = text.replace("[grid]", 'requires = ["m == 1", "transpose_b == (layout == \'nt\')"]\n[grid]')
    v = expand(parse_family(write_family(tmp_path, text)))[1]
    assert v.id == "mine/bn2_tg32_nt"
    assert v.defines("float16") == {"MB_DTYPE": "1", "MB_BN": "2", "MB_TG": "32", "MB_layout_nt": "1"}
    assert v.defines("float32")["MB_DTYPE"] == "0"
    spec = Spec(op="matmul", dtype="float16", batch=3, m=1, n=9, k=8, transpose_b=True)
    assert v.unsupported_reason(spec) is None
    assert v.geometry(spec) == ([5, 1, 3], [32, 1, 1])
    wide = Spec(op="matmul", dtype="float16", batch=1, m=4, n=9, k=8, transpose_b=True)
    assert v.unsupported_reason(wide) == "requires m == 1"
    f32 = Spec(op="matmul", dtype="float32", batch=1, m=1, n=9, k=8, transpose_b=True)
    assert v.unsupported_reason(f32) == "dtype float32 not in float16"


def test_source_is_prelude_common_and_body_with_line_directive(tmp_path):
    v = expand(parse_family(write_family(tmp_path, BASE)))[0]
    text = v.source("opencl")
    assert text.index("MB_BACKEND_OPENCL") < text.index("MBParams") < text.index('#line 1 "mine.c"')
    assert text.endswith("MB_KERNEL(mine) { }\n")
    assert v.source_hash("opencl", "float16") != v.source_hash("opencl", "float32")
    assert v.source_hash("opencl", "float16") == expand(parse_family(tmp_path / "mine.toml"))[0].source_hash(
        "opencl", "float16")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: 'colour = "red"\n' + t, "unknown field 'colour'"),
        (lambda t: t + 'colour = "red"\n', "unknown field 'dispatch.colour'"),
        (lambda t: t.replace('source = "mine.c"', 'source = "gone.c"'), "field 'source': no file"),
        (lambda t: t.replace("BN = [1, 2]", "BN = []"), "grid.BN must be a non-empty list"),
        (lambda t: t.replace("BN = [1, 2]", "BN = [1, 2]\nn = [3]"), "grid.n shadows the spec field"),
        (lambda t: t.replace('"ceil_div(n, BN)"', '"ceil_div(n, BQ)"'), "dispatch.groups: unknown name 'BQ'"),
        (lambda t: t.replace('config = "bn{BN}_tg{TG}"', 'config = "bn{BN}"'), "names two grid points"),
        (lambda t: t.replace('backends = ["opencl"]', 'backends = ["opencl"]\ndtypes = ["bf16"]'),
         "field 'dtypes': unknown dtype 'bf16' \\(known: float16, float32, bfloat16\\)"),
        (lambda t: t.replace('backends = ["opencl"]', 'backends = ["vulkan"]'), "unknown backend 'vulkan'"),
        (lambda t: t.replace('entry = "mine"', "entry = 3"), "field 'entry' must be str"),
        (lambda t: t.replace('name = "mine"', 'name = "mine'), "mine.toml"),
        (lambda t: t.replace("TG = [32, 64]", 'TG = [32, 64]\nrequires = ["m == 1"]'), "belongs before the \\[grid\\]"),
    ],
)
def test_manifest_errors_name_file_and_field(tmp_path, edit, message):
    path = write_family(tmp_path, edit(BASE))
    with pytest.raises(ManifestError, match=message) as info:
        expand(parse_family(path))
    assert str(path) in str(info.value)


def test_user_folder_adds_families_and_rejects_duplicates(tmp_path):
    write_family(tmp_path / "k", BASE)
    names = [f.name for f in load_families([tmp_path / "k"])]
    assert "mine" in names and "naive" in names
    dup = tmp_path / "dup"
    write_family(dup, BASE.replace('name = "mine"', 'name = "naive"'))
    with pytest.raises(ManifestError, match="family 'naive' is already defined"):
        load_families([dup])
    with pytest.raises(ManifestError, match="not a folder"):
        load_families([tmp_path / "nowhere"])


def test_select_by_glob():
    every = load_variants()
    assert [v.id for v in select(every, ["naive/*"])] == ["naive/default"]
    assert select(every, []) == every
    assert select(every, ["nothing/*"]) == []


def test_portable_families_run_on_every_backend_with_a_prelude():
    naive = next(f for f in load_families() if f.name == "naive")
    preludes = {p.stem for p in (variants.paths.kernels_dir() / "include").glob("*.h")}
    assert set(naive.backends) == {b for b in backends.BACKENDS if b in preludes}


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('config = "bn{BN}_tg{TG}"', 'config = "{TG.__class__}"'), "is not a grid parameter"),
    (lambda t: t.replace('config = "bn{BN}_tg{TG}"', 'config = "{TG!r:>40}"'), "is not a grid parameter"),
    (lambda t: t.replace("BN = [1, 2]", 'BN = [1, 2]\nlayout = ["nt -DX=1"]'), "letters, digits and _ only"),
    (lambda t: t.replace("BN = [1, 2]", '"B N" = [1, 2]'), "must be an identifier"),
    (lambda t: t.replace("BN = [1, 2]", "BN = [1, 4294967296]"), "32-bit"),
])
def test_templates_name_only_parameters_and_defines_stay_tokens(tmp_path, edit, message):
    path = write_family(tmp_path, edit(BASE))
    with pytest.raises(ManifestError, match=message):
        expand(parse_family(path))


def test_geometry_out_of_range_names_the_dispatch_entry(tmp_path):
    family = parse_family(write_family(tmp_path, BASE.replace('"ceil_div(n, BN)"', '"n - 1000"')))
    v = expand(family)[0]
    spec = Spec("matmul", "float16", 1, 1, 96, 64, False, True)
    with pytest.raises(ManifestError, match=r"dispatch.groups\[0\] of mine/bn1_tg32: 'n - 1000' gives -904"):
        v.geometry(spec)
