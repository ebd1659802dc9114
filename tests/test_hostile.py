"""Hostile input, each case ending `ok` or in one clear line (issue 24 sections 3 to 5, and more):
manifests, configs, stores, signals, exports, the environment and the embedding API."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metalbench import UsageError, export, report, suitegen, variants
from metalbench.results import Result
from metalbench.store import Store, StoreError

DATA = Path(__file__).parent / "data"
NAIVE = (Path(variants.paths.kernels_dir()) / "portable" / "naive.c").read_text()


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "metalbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


def one_line(out, code, *needles):
    """`out` failed with exit status `code` in one line on stderr naming every needle, with no traceback."""
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalbench: error:"), out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def family(folder, name="fam", body="", grid="TG = [64]", dispatch='groups = ["ceil_div(n, TG)", "m", "batch"]'):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "k.c").write_text(NAIVE)
    (folder / f"{abs(hash(name))}.toml").write_text(
        f'name = "{name}"\nsource = "k.c"\nentry = "naive"\nconfig = "tg{{TG}}"\n{body}\n[grid]\n{grid}\n'
        f'[dispatch]\n{dispatch}\nthreads = ["TG", 1, 1]\n')
    return folder


# --- manifests --------------------------------------------------------------------------


@pytest.mark.parametrize("body, dispatch, needle", [
    ("workspace = 1.5", None, "field 'workspace' must be an integer or an expression in quotes, got float 1.5"),
    ("workspace = [1, 2]", None, "field 'workspace' must be an integer or an expression in quotes, got list"),
    ("workspace = {a = 1}", None, "field 'workspace' must be an integer or an expression in quotes, got dict"),
    ("", 'groups = [1.5, "m", "batch"]', "dispatch.groups[0] must be an integer or an expression in quotes"),
    ("", 'groups = [true, "m", "batch"]', "dispatch.groups[0] must be an integer or an expression in quotes"),
])
def test_non_string_manifest_expressions_are_manifest_errors(tmp_path, body, dispatch, needle):
    folder = family(tmp_path / "k", body=body, **({"dispatch": dispatch} if dispatch else {}))
    one_line(cli("list", "--kernels", str(folder)), 2, str(folder), needle)


@pytest.mark.parametrize("grid, needle", [
    ("DTYPE = [1]\nTG = [64]", "grid.DTYPE: it would define MB_DTYPE"),
    ("KERNEL = [1]\nTG = [64]", "grid.KERNEL: it would define MB_KERNEL"),
    ("OP = ['MATMUL']\nTG = [64]", "grid.OP: it would define MB_OP_MATMUL"),
    ("A_b = [1]\nA = ['b']\nTG = [64]", "would both define MB_A_b"),
])
def test_grid_keys_that_redefine_a_macro_are_refused(tmp_path, grid, needle):
    one_line(cli("list", "--kernels", str(family(tmp_path / "k", grid=grid))), 2, needle)


def test_non_utf8_manifest_and_source_name_the_file(tmp_path):
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "x.toml").write_bytes(b'name = "\xff\xfe"\n')
    one_line(cli("list", "--kernels", str(bad)), 2, "x.toml: not UTF-8 text (byte 0xff at offset 8)")
    src = family(tmp_path / "s")
    (src / "k.c").write_bytes(b"\xfe kernel")
    one_line(cli("list", "--kernels", str(src)), 2, "field 'source'", "k.c: not UTF-8 text")


# --- configs (suite from-config) --------------------------------------------------------


def test_a_config_nested_100000_deep_is_one_line(tmp_path):
    deep = tmp_path / "config.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_line(cli("suite", "from-config", str(deep)), 2, "config.json: nested too deeply")


def test_a_huge_config_is_refused_unread(tmp_path):
    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(suitegen.MAX_CONFIG_BYTES + 1)
    one_line(cli("suite", "from-config", str(big)), 2, "more than a config.json holds")


def test_a_score_scale_float16_cannot_hold_is_refused_and_an_odd_one_warned(tmp_path):
    data = json.loads((DATA / "gemma-2-2b.json").read_text())
    (tmp_path / "huge.json").write_text(json.dumps({**data, "query_pre_attn_scalar": 1e-30}))
    # The config says float32, which holds it; in float16 it is refused.
    one_line(cli("suite", "from-config", str(tmp_path / "huge.json"), "--dtype", "float16"), 2, "--dtype",
             "alpha 1e+15", "float16 cannot hold")
    (tmp_path / "huge16.json").write_text(json.dumps({**data, "query_pre_attn_scalar": 1e-30,
                                                     "torch_dtype": "float16"}))
    one_line(cli("suite", "from-config", str(tmp_path / "huge16.json")), 2, "query_pre_attn_scalar", "alpha 1e+15",
             "float16 cannot hold")
    (tmp_path / "odd.json").write_text(json.dumps({**data, "query_pre_attn_scalar": 1e-4}))
    out = cli("suite", "from-config", str(tmp_path / "odd.json"))
    assert out.returncode == 0 and "# Warning: the score scale alpha is 100" in out.stdout
    assert out.stderr.startswith("metalbench: warning:") and "alpha is 100" in out.stderr
    plain = cli("suite", "from-config", str(DATA / "gemma-2-2b.json"))
    assert plain.returncode == 0 and "warning" not in plain.stderr.lower()


# --- stores -----------------------------------------------------------------------------


def _store_with_a_run(path):
    store = Store(path)
    run = store.begin_run("t", "opencl", {"name": "G"}, {"rank_by": "batch"}, None,
                          [{"key": "matmul/float16/1x1x8x8/nt", "label": "matmul 1x8x8 nt"}])
    store.add(run, 0, Result("v/a", "matmul/float16/1x1x8x8/nt", "ok", key="k",
                             batch={"count": 3, "median": 1000.0, "min": 900.0, "max": 1100.0}))
    store.finish_run(run, "complete")
    store.close()


@pytest.mark.parametrize("damage, needle", [
    ("UPDATE meta SET value='abc' WHERE name='schema'", "its schema version is 'abc', not a number"),
    ("UPDATE results SET batch='{not json'", "run 1: result 1: column batch is not JSON"),
    ("UPDATE results SET detail='[1]'", "column detail is list JSON, not an object"),
    ("UPDATE results SET status='bogus'", "run 1: result 1: 'bogus' is not a valid Status"),
    ("UPDATE runs SET device='[1,2]'", "run 1: column device is list JSON"),
    ("UPDATE runs SET specs='{}'", "column specs is not a list of specs"),
])
def test_a_damaged_store_names_the_store_and_the_damage_with_exit_1(tmp_path, damage, needle):
    import sqlite3

    path = tmp_path / "r.sqlite"
    _store_with_a_run(path)
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.close()
    one_line(cli("report", "--db", str(path)), 1, "r.sqlite: damaged", needle)
    with pytest.raises(StoreError):
        Store(path, readonly=True).load_run(1)


# --- the environment --------------------------------------------------------------------


def test_a_home_pocl_cannot_write_names_the_real_cause(opencl, tmp_path):
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "POCL_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-m", "metalbench", "run", "--suite", "smoke", "--backend", "opencl"],
                         capture_output=True, text=True, env={**env, "HOME": str(home)}, timeout=300)
    one_line(out, 2, "PoCL", "cannot make its kernel cache", "home-is-a-file is not a folder", "POCL_CACHE_DIR")
    assert "install a driver" not in out.stderr


def _slow_suite(tmp_path):
    suite = tmp_path / "slow.toml"
    suite.write_text("".join(f'[[spec]]\nop = "matmul"\nbatch = 1\nm = {m}\nn = 130\nk = 96\n' for m in range(40, 60))
                     .join(['name = "slow"\ndtype = "float32"\n', ""]))
    return suite


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_stops_a_run_like_ctrl_c(opencl, tmp_path, signum, code):
    db = tmp_path / "r.sqlite"
    process = subprocess.Popen([sys.executable, "-m", "metalbench", "run", "--suite", str(_slow_suite(tmp_path)),
                                "--backend", "opencl", "--variants", "naive/*", "--db", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    line = ""
    while "pairs" not in line and time.monotonic() < deadline:  # progress lines: the sweep has begun
        line = process.stderr.readline()
    assert "pairs" in line, line
    process.send_signal(signum)
    sent = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert time.monotonic() - sent < 10
    assert "every result measured so far is stored" in err and "Traceback" not in err
    store = Store(db, readonly=True)
    assert store.load_run(1).status == "interrupted"


# --- exports ----------------------------------------------------------------------------


def _winner(v, index, key, median=1000.0):
    return Result(v.id, key, "ok", key=f"{v.id}/{index}", batch={"count": 5, "median": median, "min": median,
                                                                   "max": median},
                  detail={"source_hash": v.source_hash("opencl", "float16"), "defines": v.defines("float16"),
                          "groups": [1, 1, 1], "threads": [64, 1, 1], "workspace": 1})


SPECS = [{"key": f"matmul/float16/1x1x{n}x64/nt", "label": f"matmul 1x{n}x64 nt"} for n in (64, 96, 128)]


def _export(tmp_path, names, status="complete", plan=None, results=None):
    folder = tmp_path / "k"
    for name in names:
        family(folder, name=name)
    found = {v.family.name: v for v in variants.load_variants(None, [folder]) if v.family.name in names}
    store = Store(tmp_path / "r.sqlite")
    run = store.begin_run('su*/ite', "opencl", {"name": "G */ x", "vendor": "V", "driver": "1"},
                          {"rank_by": "batch"}, None, SPECS)
    if plan:
        store.plan_run(run, *plan)
    for index, name in (results or list(enumerate(names))):
        store.add(run, index, _winner(found[name], index, SPECS[index]["key"]))
    store.finish_run(run, status)
    loaded = store.load_run(run)
    return export.write_export(loaded, report.build(loaded), list(found.values()), tmp_path / "out")


def test_families_whose_names_differ_in_rewritten_characters_get_files_of_their_own(tmp_path):
    done = _export(tmp_path, ["col_x", "col x", "col/x"])
    files = [e["file"] for e in done.entries]
    assert len(set(files)) == 3, files
    for e in done.entries:
        text = (tmp_path / "out" / e["file"]).read_text()
        assert text.startswith(f"/* {e['variant']} ")  # each file holds its own family's kernel


def test_a_name_with_a_comment_end_cannot_end_a_comment(tmp_path, opencl):
    done = _export(tmp_path, ["end*/x", "ok"])
    out = tmp_path / "out"
    for path in [*done.sources, out / "metalbench_dispatch.h"]:
        text = path.read_text()
        assert text.count("*/") == text.count("/*"), path  # every comment closes where it should
    source = (out / done.entries[0]["file"]).read_text()
    opencl.compile(source, "naive", {}, "exported")  # and the file still compiles as it is


def test_an_interrupted_run_exports_with_a_warning_and_marks_what_it_never_reached(tmp_path):
    done = _export(tmp_path, ["a", "b"], status="interrupted", plan=({0: 2, 1: 2, 2: 2}, {0: 2, 1: 2, 2: 2}),
                   results=[(0, "a"), (0, "b"), (1, "a")])
    states = [e.get("state") for e in done.entries]
    assert states == [None, "incomplete", "not reached"]
    assert done.entries[2]["kind"] == "none" and "not reached" in done.entries[2]["reason"]
    assert any("1 specs were never reached" in w for w in done.warnings)
    assert any("1 specs were measured in part" in w for w in done.warnings)
    table = json.loads((tmp_path / "out" / "dispatch.json").read_text())
    assert table["schema"] == export.EXPORT_SCHEMA and table["specs"][2]["state"] == "not reached"


# --- the embedding API ------------------------------------------------------------------


SCALE = """__kernel void scale(__global float* x, const float s, const int n) {
  int i = get_global_id(0); if (i < n) x[i] *= s; }"""


def test_copy_across_devices_or_onto_itself_is_a_usage_error(opencl):
    from metalbench import _core

    other = _core.open("opencl", 0)
    a, b = opencl.allocate(256), other.allocate(256)
    with pytest.raises(UsageError, match=r"\[core::copy\] the source buffer belongs to another device"):
        a.copy_from(b)
    with pytest.raises(UsageError, match="share memory"):
        a.copy_from(a)
    align = int(opencl.info["view_alignment"])
    big = opencl.allocate(4 * align)
    with pytest.raises(UsageError, match="share memory"):
        big.view(0, 2 * align).copy_from(big.view(align, 2 * align))
    c = opencl.allocate(256)
    c.write(np.arange(64, dtype=np.float32))
    a.copy_from(c)  # the same device, apart: fine
    halves = opencl.allocate(2 * max(align, 256))
    half = max(align, 256)
    halves.view(0, 256).copy_from(c)
    halves.view(half, 256).copy_from(halves.view(0, 256))  # views of one buffer that do not overlap: fine
    out = np.zeros(2 * half // 4, np.float32)
    halves.read(out)
    assert (out[half // 4:half // 4 + 64] == np.arange(64)).all()


def test_a_kernel_or_buffer_of_a_closed_device_is_a_usage_error():
    from metalbench import _core, open_device

    try:
        first = _core.open("opencl", 0)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no OpenCL device: {e}")
    kernel = first.compile(SCALE, "scale", {}, "mine/scale")
    x = first.allocate(4096)
    del first  # the device is closed (its last reference gone)
    second = open_device("opencl")
    args = [second.allocate(4096), struct.pack("<f", 1.0), struct.pack("<i", 1024)]
    with pytest.raises(UsageError, match="kernel mine/scale belongs to another device, or to one since closed"):
        second.run(kernel, args, [4], [256])
    own = second.compile(SCALE, "scale", {}, "mine/scale")
    with pytest.raises(UsageError, match="argument 0, a buffer, belongs to another device"):
        second.run(own, [x, *args[1:]], [4], [256])
    second.run(own, args, [4], [256])


def test_measure_refuses_slots_of_different_arguments(opencl):
    kernel = opencl.compile(SCALE, "scale", {}, "mine/scale")
    y = opencl.allocate(4096)
    full = [y, struct.pack("<f", 1.0), struct.pack("<i", 1024)]
    with pytest.raises(UsageError, match="slot 1 has 2 arguments and slot 0 3: every slot takes the same"):
        opencl.measure(kernel, [full, full[:2]], [4], [256], max_time=0.01)
    with pytest.raises(UsageError, match="slot 1: argument 2 is not of slot 0's kind and size"):
        opencl.measure(kernel, [full, [y, struct.pack("<f", 1.0), struct.pack("<q", 1024)]], [4], [256],
                       max_time=0.01)
    # Two identical slots are measured. The time cap is far beyond what three samples of
    # this kernel take, so the sample cap ends the clock however loaded the machine is
    # (at max_time=0.01 a busy CI runner stopped it on time after one sample).
    r = opencl.measure(kernel, [full, full], [4], [256], max_time=30.0, min_samples=2, max_samples=3,
                       max_noise=1.0)
    assert r["batch"]["stop"] in ("converged", "sample-cap") and 2 <= r["batch"]["count"] <= 3


# --- more of the CLI's edges ------------------------------------------------------------


def test_a_run_id_past_sqlite_integers_is_no_run(tmp_path):
    _store_with_a_run(tmp_path / "r.sqlite")
    for args in (["report"], ["export", "--out", str(tmp_path / "x")]):
        one_line(cli(*args, "99999999999999999999999", "--db", str(tmp_path / "r.sqlite")), 2,
                 "no run 99999999999999999999999")


def test_a_full_disk_under_stdout_is_one_line_not_a_bug(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    _store_with_a_run(tmp_path / "r.sqlite")
    for extra in ([], ["--csv", "-", "-q"]):
        with open("/dev/full", "w") as full:
            out = subprocess.run([sys.executable, "-m", "metalbench", "report", "--db", str(tmp_path / "r.sqlite"),
                                  *extra], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert "cannot write the output: No space left on device" in out.stderr
    one_line(cli("report", "--db", str(tmp_path / "r.sqlite"), "--json", "/dev/full", "-q"), 2,
             "--json /dev/full: cannot write: No space left on device")


def test_a_closed_stderr_is_no_crash(tmp_path):
    _store_with_a_run(tmp_path / "r.sqlite")
    out = subprocess.run(f"{sys.executable} -m metalbench report --db {tmp_path / 'r.sqlite'} 2>&-", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "metalbench run 1" in out.stdout


def test_ray_at_a_port_that_is_not_ray_fails_within_its_bound(tmp_path):
    pytest.importorskip("ray")
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = ("import sys, time\nfrom metalbench import ray_pool\nfrom metalbench.settings import Settings\n"
            "ray_pool.CONNECT_TIMEOUT = 3\nstarted = time.monotonic()\n"
            f"try:\n    ray_pool.RayPool('opencl', Settings(), 60, '127.0.0.1:{port}', 1).describe()\n"
            "except Exception as e:\n    print(type(e).__name__, e, round(time.monotonic() - started))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        listener.close()
    assert out.stdout.startswith(f"BackendError --ray 127.0.0.1:{port}: no Ray cluster answered within 3 s"), \
        out.stdout + out.stderr[-500:]
    assert int(out.stdout.split()[-1]) < 10


def test_nohup_keeps_sighup_ignored(tmp_path):
    """Under nohup, SIGHUP is ignored before metalbench starts; it must stay so."""
    code = ("import signal, sys\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\nfrom metalbench import cli\n"
            "sys.argv = ['metalbench', 'report', '--db', sys.argv[1], '-q']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is not "
            "signal.SIG_DFL)\n")
    _store_with_a_run(tmp_path / "r.sqlite")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.sqlite")], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
