"""What a user sees: the CLI's habits, progress, and reports that tell the truth at a glance.

Most tests build their runs in a store by hand (no device, no sweep), so they are fast
and say exactly what a report must do with each kind of result."""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from metalbench import cli_progress, compare, formats, report, tables
from metalbench.results import Result
from metalbench.runner import Planned
from metalbench.specs import Spec
from metalbench.store import Store

DEVICE = {"name": "Test GPU", "vendor": "Test", "driver": "1.0", "backend": "opencl", "peak_bandwidth": 1e11,
          "peak_bandwidth_source": "test"}
SETTINGS = {"rank_by": "batch", "warmup": 1, "min_samples": 10, "max_samples": 100, "min_time": 0.005,
            "max_time": 0.1, "max_noise": 0.005, "race": True}
SPECS = [{"key": "matmul/float16/1x1x64x64/nt", "label": "matmul 1x64x64 nt"},
         {"key": "matmul/float16/1x1x32x32/nt", "label": "matmul 1x32x32 nt"},
         {"key": "matmul/float16/1x1x96x4864/nt", "label": "matmul 1x96x4864 nt"}]


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "metalbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


def _stats(ns):
    ns = np.sort(np.asarray(ns, dtype=np.float64))
    return {"count": int(ns.size), "median": float(np.median(ns)), "min": float(ns[0]), "max": float(ns[-1]),
            "ci_lo": float(np.quantile(ns, 0.3)), "ci_hi": float(np.quantile(ns, 0.7)),
            "rel_stdev": float(ns.std() / ns.mean()) if ns.size > 1 else 0.0, "stop": "converged"}


def make_run(store, results, *, suite="test", specs=SPECS, status="complete", settings=SETTINGS, plan=None,
             baseline="naive/default", device=DEVICE, seed=0, backend="opencl"):
    """A run of `results`: {(spec index, variant): (status, median ns or None, samples)} or Result objects.
    `plan`: per spec index (pairs it reports, pairs it set out to measure), as the runner records them."""
    rng = np.random.default_rng(seed)
    run = store.begin_run(suite, backend, device, settings, baseline, specs)
    if plan is not None:
        store.plan_run(run, {i: p for i, (p, _) in plan.items()}, {i: m for i, (_, m) in plan.items()})
    for (index, variant), value in results.items():
        if isinstance(value, Result):
            store.add(run, index, value)
            continue
        state, median, count = value
        r = Result(variant, specs[index]["key"], state, key=f"{seed}/{index}/{variant}",
                   category={"wrong": "wrong", "failed": "compile", "raced": "raced"}.get(state, ""))
        if median is not None:
            ns = np.round(rng.normal(median, median * 0.02, count)).astype(np.uint64)
            r.batch = _stats(ns)
            r.samples = {"batch": ns}
        if state == "raced":
            r.measure = {"race": {"best": "x", "ratio": median / 10000, "confidence": 0.95}}
        store.add(run, index, r)
    if status != "running":
        store.finish_run(run, status)
    return run


# --- the CLI's habits -------------------------------------------------------------------


def test_version_and_short_help():
    for flag in ("--version", "-V"):
        out = cli(flag)
        assert out.returncode == 0 and re.fullmatch(r"metalbench \S+\n", out.stdout), out
    for args in (["-h"], ["run", "-h"], ["report", "-h"], ["suite", "from-config", "-h"]):
        out = cli(*args, env={"COLUMNS": "100"})
        assert out.returncode == 0 and "Usage" in out.stdout, (args, out.stderr)


def test_help_shows_placeholders_and_text_as_written():
    """No Python types as placeholders, brackets kept, and every option says what it does and its default."""
    for command in ("run", "report", "export", "compare", "list", "doctor"):
        out = cli(command, "--help", env={"COLUMNS": "200"})
        assert out.returncode == 0, out.stderr
        for python_type in ("<int>", "<float>", "<str>", "<bool>", "<path>", "<list["):
            assert python_type not in out.stdout, (command, python_type)
    run_help = cli("run", "--help", env={"COLUMNS": "200"}).stdout
    assert "pip install 'metalbench[ray]'" in run_help
    assert "SECONDS" in run_help and "FILE|-" in run_help and "GLOB" in run_help


def test_readme_synopsis_names_each_option_as_its_help_does():
    """The README's `## Commands` block and each command's --help agree: every option the
    synopsis names exists, with the placeholder the help shows."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```", readme.index("## Commands"))
    block = readme[start + 3:readme.index("```", start + 3)]
    synopsis: dict[str, str] = {}
    command = ""
    for line in block.splitlines():
        found = re.match(r"metalbench ((?:suite )?[a-z-]+)(.*)", line)
        if found and not found.group(1).startswith("-"):
            command = found.group(1)
            synopsis[command] = found.group(2)
        elif command and line.startswith(" "):
            synopsis[command] += " " + line
    assert {"run", "report", "export", "compare", "doctor", "list", "suite from-config"} <= set(synopsis)
    checked = 0
    for command, text in synopsis.items():
        shown = cli(*command.split(), "--help", env={"COLUMNS": "200"}).stdout
        for option, placeholder in re.findall(r"\[(--[a-z-]+)(?: ([^\]\s]+))?", text):
            assert re.search(rf"{option}\b", shown), (command, option)
            if placeholder:
                assert re.search(rf"{option}\s+{re.escape(placeholder)}(\s|$)", shown, re.M), \
                    (command, option, placeholder)
                checked += 1
    assert checked > 30


def test_every_option_has_help_and_a_default_said():
    import typer.main

    from metalbench import cli as cli_module

    def commands(group):
        for name, command in getattr(group, "commands", {}).items():
            yield name, command
            yield from commands(command)

    for name, command in commands(typer.main.get_command(cli_module.app)):
        for param in command.params:
            if param.param_type_name != "option":
                continue
            assert param.help, f"{name} {param.opts}: no help"
            # An option with a value by default shows it (typer's [default: ...]) or says it in its help;
            # one that is off unless given (None) needs no default.
            if param.default is not None and param.show_default is False:
                assert "default" in param.help.lower(), f"{name} {param.opts}: its default is not said"


def test_list_backend_filters_families(tmp_path):
    out = cli("list", "--backend", "opencl")
    assert out.returncode == 0 and "naive" in out.stdout and "warpgemv" not in out.stdout  # warpgemv is CUDA's
    assert "cublas" not in out.stdout and "mps" not in out.stdout
    bad = cli("list", "--backend", "vulkan")
    assert bad.returncode == 2 and "unknown backend 'vulkan'" in bad.stderr


@pytest.fixture
def stored(tmp_path):
    db = tmp_path / "r.sqlite"
    store = Store(db)
    make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "gemv/a"): ("ok", 10000, 40),
                     (1, "naive/default"): ("ok", 8000, 40), (2, "naive/default"): ("ok", 90000, 20)})
    store.close()
    return db


def test_dash_writes_data_to_stdout_and_the_table_to_stderr(stored):
    out = cli("report", "--db", str(stored), "--json", "-")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["run_id"] == 1
    assert "best correct variant per spec" in out.stderr  # the rich report went to stderr
    csv_out = cli("report", "--db", str(stored), "--csv", "-", "--quiet")
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("run,spec_index") and csv_out.stderr == ""
    two = cli("report", "--db", str(stored), "--json", "-", "--csv", "-")
    assert two.returncode == 2 and "both ask for standard output" in two.stderr


def test_quiet_prints_nothing_but_still_writes_files(stored, tmp_path):
    out = cli("report", "--db", str(stored), "-q", "--markdown", str(tmp_path / "r.md"))
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    assert (tmp_path / "r.md").read_text().startswith("# metalbench run 1")


def test_closed_stdout_is_one_line_before_any_work(stored):
    out = subprocess.run(f"{sys.executable} -m metalbench report --db {stored} >&-", shell=True, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "standard output is closed" in out.stderr


def test_a_closed_pipe_ends_quietly(stored):
    out = subprocess.run(f"{sys.executable} -m metalbench report --db {stored} | head -c 10 >/dev/null; "
                         "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "141" and "Traceback" not in out.stderr and "Error" not in out.stderr


def test_an_ascii_stream_gets_plain_characters(stored):
    out = cli("report", "--db", str(stored), env={"PYTHONIOENCODING": "ascii"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.isascii() and "metalbench run 1 - suite test" in out.stdout


def test_rich_markup_in_names_is_shown_as_written(tmp_path):
    """A suite or variant named like console markup ('mk[/]', '[bold]') must not break or style any output."""
    db = tmp_path / "m.sqlite"
    store = Store(db)
    make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "mk[/]/tg64"): ("ok", 10000, 40),
                     (1, "[bold]x[/bold]/y"): ("failed", None, 0)}, suite="s[/]uite")
    store.close()
    out = cli("report", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert "s[/]uite" in out.stdout and "mk[/]/tg64" in out.stdout and "[bold]x[/bold]/y" in out.stdout
    assert cli("compare", "1", "1", "--db", str(db)).returncode == 0


def test_a_rerun_that_measured_nothing_says_so(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    first = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)})
    run = store.begin_run("test", "opencl", DEVICE, SETTINGS, "naive/default", SPECS)
    for r in store.load_run(first).results:
        store.reuse(run, r.spec_index, r.id)
    store.finish_run(run, "complete")
    console = Console(file=io.StringIO(), width=200)
    report.render(report.build(store.load_run(run)), console)
    assert "nothing was measured: every result was reused" in console.file.getvalue()


# --- progress ---------------------------------------------------------------------------


SPEC = Spec("matmul", "float16", 1, 1, 64, 64, transpose_b=True)


def test_line_progress_names_the_phase_the_pair_in_progress_and_the_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = cli_progress.LineProgress(out, every=5.0)
    p.status("opening the device")
    p.status("planning 1 specs x 3 variants (reusing stored results)")
    p.start(4)
    p.planned([Planned(SPEC, ("gemv/a", "gemv/b", "gemv/c", "gemv/d"))])
    clock[0] += 6
    p.begin(SPEC, "gemv/a")  # a line: 5 s have passed
    p.result(SPEC, _timed("gemv/a", 1.0))
    p.begin(SPEC, "gemv/b")  # no line: too soon
    clock[0] += 6
    p.result(SPEC, _timed("gemv/b", 1.0))  # a line, with an estimate and nothing in progress
    p.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("metalbench: planning") and "opening the device" in lines[0]
    assert "planning 1 specs" in lines[1]
    assert lines[2].startswith("metalbench: 0/4 pairs")
    assert "measuring matmul 1x64x64 nt: gemv/a" in lines[3]  # the pair in progress, not the last finished
    assert "2/4 pairs (50%)" in lines[4] and "left" in lines[4] and "gemv/b" not in lines[4]
    assert lines[-1].startswith("metalbench: 2/4 pairs")
    assert not any("0/4" in line and "measuring" not in line and "planning" not in line for line in lines[3:])


def test_a_long_pair_still_gets_a_line(monkeypatch):
    out = io.StringIO()
    with cli_progress.LineProgress(out, every=0.05, heartbeat=0.3) as p:
        p.start(2)
        p.begin(SPEC, "naive/slow")
        time.sleep(1.0)  # nothing happens: the heartbeat says what is still being measured
    beats = [line for line in out.getvalue().splitlines() if "measuring matmul 1x64x64 nt: naive/slow" in line]
    assert len(beats) >= 2, out.getvalue()


def test_pairs_in_progress_are_one_per_worker():
    flight = cli_progress._InFlight()
    flight.begin(SPEC, "gemv/a", 0)
    flight.begin(SPEC, "gemv/b", 0)  # worker 0 moved on (a brief lap stores no result of its own)
    assert flight.text() == "measuring matmul 1x64x64 nt: gemv/b"
    flight.begin(SPEC, "gemv/c", 1)
    assert flight.text() == "measuring matmul 1x64x64 nt: gemv/c (+1 more)"
    flight.end(SPEC, Result("gemv/c", SPEC.key(), "ok"))
    assert flight.text() == "measuring matmul 1x64x64 nt: gemv/b"


def test_live_progress_is_never_an_unlabelled_zero_while_planning():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    p = cli_progress.LiveProgress(console, [0])
    p.status("planning 20 specs x 70 variants (reusing stored results)")
    task = p.progress.tasks[p.task]
    assert task.description == "planning" and "planning 20 specs" in task.fields["what"]
    p.start(10)
    p.begin(SPEC, "gemv/a")
    assert "measuring matmul 1x64x64 nt: gemv/a" in p.progress.tasks[p.task].fields["what"]
    p.result(SPEC, Result("gemv/a", SPEC.key(), "ok"))
    task = p.progress.tasks[p.task]
    assert task.completed == 2 and task.total == 20  # halves of pairs
    assert task.fields["pairs"] == "1/10" and task.fields["eta"].startswith("eta ")


def _timed(variant: str, steps: float, status: str = "raced") -> Result:
    """A brief lap's result whose pair recorded `steps` seconds of verifying, timing and checking."""
    return Result(variant, SPEC.key(), status,
                  measure={"lap": "brief", "seconds": {"verify": steps, "time": 0.0, "check": 0.0}})


def test_laps_move_the_percentage_and_the_estimate_before_a_spec_is_decided(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = cli_progress.LineProgress(out, every=0.0)
    p.start(4)
    p.planned([Planned(SPEC, ("gemv/a", "gemv/b", "gemv/c", "gemv/d"))])
    lines = []
    for variant in ("gemv/a", "gemv/b", "gemv/c", "gemv/d"):  # brief laps of 1 s each, a second apart
        clock[0] += 1
        p.lapped(SPEC, _timed(variant, 1.0, "ok"))
        lines.append(out.getvalue().splitlines()[-1])
    # A lap is half its pair: 3.5 pairs of 1 s left after the first, at a wall second a second.
    assert lines[0].startswith("metalbench: 0/4 pairs (12%)") and "about 0:00:04 left" in lines[0]
    assert lines[-1].startswith("metalbench: 0/4 pairs (50%)") and "about 0:00:02 left" in lines[-1]
    clock[0] += 1
    p.result(SPEC, _timed("gemv/a", 1.0))  # the race's verdict: the lap's second half, its seconds counted once
    assert "1/4 pairs (62%)" in out.getvalue().splitlines()[-1]
    p.result(SPEC, _timed("gemv/b", 1.0))
    # 4 s recorded in 5 s of sweep; the two pairs still lapped are a pair of 1 s.
    assert "2/4 pairs (75%)" in out.getvalue().splitlines()[-1]
    assert "about 0:00:01 left" in out.getvalue().splitlines()[-1]
    assert p.work.eta.recorded == 4.0


def test_results_reused_before_the_start_count_as_done_but_set_no_pace():
    work = cli_progress._Work()
    for i in range(50):
        work.result(SPEC, Result(f"gemv/{i}", SPEC.key(), "ok", reused=True), now=0.0)
    work.start(100, now=0.0)
    work.planned([Planned(SPEC, tuple(f"gemv/{i}" for i in range(50, 100)))])
    assert work.fraction() == 0.5 and work.left(5.0) is None
    work.result(SPEC, _timed("gemv/50", 10.0), now=10.0)
    work.result(SPEC, _timed("gemv/51", 10.0), now=20.0)
    assert work.left(20.0) == pytest.approx(48 * 10.0)


def test_a_run_with_stderr_not_a_terminal_shows_progress_lines(opencl, tmp_path):
    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\ndtype = "float16"\n[[spec]]\nop = "matmul"\nbatch = 1\nm = 1\nn = 64\nk = 64\n'
                     'transpose_b = true\n')
    out = cli("run", "--suite", str(suite), "--backend", "opencl", "--variants", "naive/*", "--max-time", "0.02")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("metalbench: ")]
    assert any("planning" in line for line in lines) and lines[-1].startswith("metalbench: 1/1 pairs (100%)")


# --- reports ----------------------------------------------------------------------------


def _render(rep, width=200):
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    report.render(rep, console)
    return console.file.getvalue()


def test_sample_counts_and_no_noise_from_fewer_than_three(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run = make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "gemv/one"): ("ok", 10000, 1),
                           (0, "gemv/two"): ("ok", 15000, 2)})
    rep = report.build(store.load_run(run))
    rows = {r.variant: r for r in rep.specs[0].rows}
    assert report.noise_text(rows["gemv/one"].clocks["batch"]) == "-"  # one sample: no "0.0%"
    assert report.noise_text(rows["gemv/two"].clocks["batch"]) == "-"
    assert report.noise_text(rows["naive/default"].clocks["batch"]).endswith("%")
    text = _render(rep)
    line = next(line for line in text.splitlines() if line.startswith("gemv/one"))
    cells = [c.strip() for c in line.split("│")]
    assert cells[2] == "-" and cells[3] == "1"  # noise, n
    assert "| n |" in formats.to_markdown(rep).replace("---", "")  # and in Markdown


def test_tables_fit_100_columns_without_cutting_a_number(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    results = {(0, "naive/default"): ("ok", 123456789, 40), (1, "naive/default"): ("ok", 8000, 40),
               (2, "naive/default"): ("ok", 90000, 20)}
    results.update({(0, f"tilegemv/nt_bn256_tg1024_stage{i}_with_a_long_name"): ("ok", 10000 + i, 40)
                    for i in range(3)})
    run = make_run(store, results)
    rep = report.build(store.load_run(run))
    text = _render(rep, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    # Every figure a number column holds appears whole somewhere in the text.
    for spec in rep.specs:
        for row in spec.rows:
            for cell in report._spec_cells(rep, row)[1:4]:
                assert cell in text, cell
    assert "columns left out to fit 100 columns:" in text  # and it says what it left out
    wide = _render(rep, width=200)
    assert "columns left out" not in wide


def test_fit_leaves_out_the_least_useful_columns_first():
    columns = [tables.Column("name"), tables.Column("useful", numeric=True, keep=5),
               tables.Column("useless", numeric=True, keep=1)]
    rows = [["a" * 10, "1" * 40, "2" * 40]]
    layout = tables.fit(columns, rows, 60)
    assert layout.shown == [0, 1] and layout.dropped == ["useless"]
    assert tables.fit(columns, rows, 200).dropped == []


def test_an_interrupted_run_says_which_specs_it_never_reached(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run = make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "gemv/a"): ("ok", 10000, 40),
                           (1, "naive/default"): ("ok", 8000, 40)},
                   status="interrupted", plan={0: (2, 2), 1: (2, 2), 2: (2, 2)})
    rep = report.build(store.load_run(run))
    assert [s.state for s in rep.specs] == ["", "incomplete", "not reached"]
    text = _render(rep)
    summary = text[text.index("best correct variant per spec"):]
    assert "(not reached: the run stopped first)" in summary and "(none correct)" not in summary
    assert "naive/default (incomplete run)" in summary
    assert "1 specs not reached, 1 measured in part" in text
    assert json.loads(report.to_json(rep))["specs"][2]["state"] == "not reached"
    markdown = formats.to_markdown(rep)
    assert "1 specs not reached, 1 measured in part" in markdown and "(not reached: the run stopped first)" in markdown


def test_a_finished_run_with_nothing_correct_is_none_correct_not_unreached(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run = make_run(store, {(0, "naive/default"): ("wrong", 20000, 40)}, plan={0: (1, 1), 1: (0, 0), 2: (0, 0)})
    rep = report.build(store.load_run(run))
    assert rep.specs[0].state == "" and report.state_text(rep.specs[0]) == "(none correct)"


def test_compile_errors_show_their_first_lines_without_verbose(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    log = "warning: something harmless\n\nbroken.c:3:1: error: unknown type name 'MB_KERNEL'\nbroken.c:3:9: note: x\n" \
          "more\nand more"
    run = make_run(store, {(0, "naive/default"): ("ok", 20000, 40),
                           (0, "broken/tg64"): Result("broken/tg64", SPECS[0]["key"], "failed", category="compile",
                                                      message="[opencl::compile] broken/tg64: failed", log=log)})
    rep = report.build(store.load_run(run))
    assert rep.failures[0].detail == ["broken.c:3:1: error: unknown type name 'MB_KERNEL'", "broken.c:3:9: note: x",
                                      "more"]
    text = _render(rep)
    assert "error: unknown type name 'MB_KERNEL'" in text and "and more" not in text
    assert "unknown type name 'MB_KERNEL'" in formats.to_markdown(rep)


def test_raced_ratios_keep_their_digits():
    assert report.ratio_text(1.04) == "1.04x" and report.ratio_text(1.004) == "1.004x"
    assert report.ratio_text(2.5) == "2.50x"


def test_raced_out_lines_say_what_the_ratio_is(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    run = make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "gemv/a"): ("ok", 10000, 40),
                           (0, "gemv/b"): ("raced", 10400, 5)})
    text = _render(report.build(store.load_run(run)))
    assert "gemv/b 1.04x" in text and "in a brief lap" in text and "1.0x" not in text


# --- HTML -------------------------------------------------------------------------------


def test_html_memory_bound_suites_get_bandwidth_bars_others_a_roofline(tmp_path):
    pytest.importorskip("matplotlib")
    from metalbench import html

    store = Store(tmp_path / "r.sqlite")
    gemv = make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (2, "naive/default"): ("ok", 90000, 40),
                            (2, "g$x$/a"): ("raced", 12000, 5), (2, "g$x$/b"): ("ok", 50000, 40)})
    page = html.to_html(report.build(store.load_run(gemv)))
    assert "id='bandwidth'" in page and "id='roofline'" not in page
    assert "<details class='raced'><summary>1 raced out" in page
    assert "g$x$/b" in page  # a dollar sign is text, not matplotlib's math mode
    square = [{"key": "matmul/float32/1x256x256x256/nn", "label": "matmul 256x256x256 nn float32"}, SPECS[0]]
    wide = make_run(store, {(0, "naive/default"): ("ok", 200000, 40), (1, "naive/default"): ("ok", 9000, 40)},
                    specs=square)
    page = html.to_html(report.build(store.load_run(wide)))
    assert "id='roofline'" in page and "id='bandwidth'" not in page


def test_html_spec_charts_share_one_scale_and_keep_labels_in_the_frame(tmp_path):
    pytest.importorskip("matplotlib")
    from metalbench import html

    store = Store(tmp_path / "r.sqlite")
    run = make_run(store, {(0, "naive/default"): ("ok", 20000, 40), (0, "gemv/a"): ("ok", 10000, 40),
                           (1, "naive/default"): ("ok", 8000, 40), (1, "gemv/a"): ("ok", 2000, 40)})
    data = html.chart_data(report.build(store.load_run(run)))
    low, high = html._scale(data)
    assert low == pytest.approx(1.0) and 4.0 < high < 5.0  # 8000 / 2000 with its noise: one range for both
    page = html.to_html(report.build(store.load_run(run)))
    assert page.count("the same scale for every spec") == 2
    assert page.count("annotation_clip") == 0  # (a matplotlib option, never text)


# --- compare ----------------------------------------------------------------------------


def test_compare_with_no_pair_in_common_is_a_usage_error(tmp_path):
    db = tmp_path / "r.sqlite"
    store = Store(db)
    make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, suite="one")
    other = [{"key": "matmul/float16/1x1x8x8/nt", "label": "matmul 1x8x8 nt"}]
    make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, suite="two", specs=other)
    store.close()
    out = cli("compare", "1", "2", "--db", str(db))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "have no pair in common" in out.stderr and "nothing to compare" in out.stderr


def test_compare_says_when_suites_cache_states_or_backends_differ(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    a = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, suite="one")
    b = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, suite="two", settings={**SETTINGS, "cold": True},
                 seed=1)
    c = compare.compare(store, a, store, b)
    assert any(line.startswith("different suites") for line in c.differences)
    assert any(line.startswith("different cache states: A is warm, B is cold") for line in c.differences)
    assert json.loads(compare.to_json(c))["schema"] == compare.COMPARE_SCHEMA
    cuda = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, backend="cuda", seed=2)
    assert any(line.startswith("different backends: A ran on opencl, B on cuda")
               for line in compare.compare(store, a, store, cuda).differences)
    console = Console(file=io.StringIO(), width=200)
    compare.render(c, console)
    assert "note: different suites" in console.file.getvalue()


def test_compare_refuses_a_run_still_in_progress(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    a = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)})
    b = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, status="running")
    store._db.execute("UPDATE runs SET pid=? WHERE id=?", (os.getppid(), b))  # a live process of this host
    with pytest.raises(compare.CompareError, match="still running"):
        compare.compare(store, a, store, b)
    store._db.execute("UPDATE runs SET pid=? WHERE id=?", (2**22 + 12345, b))  # a process that is gone
    gone = compare.compare(store, a, store, b)
    assert gone.b.status == "abandoned" and any("is abandoned" in line for line in gone.differences)
    c = make_run(store, {(0, "naive/default"): ("ok", 20000, 40)}, status="interrupted")
    assert any("is interrupted" in line for line in compare.compare(store, a, store, c).differences)


# --- doctor -----------------------------------------------------------------------------


def test_doctor_shows_the_stored_peak(opencl, tmp_path):
    from metalbench import doctor, roofline

    store = Store(tmp_path / "p.sqlite")
    store.put_peak(roofline.device_key({**opencl.info, "backend": "opencl"}), 12.5e9, "measured: test")
    store.close()
    found = next(r for r in doctor.diagnose(tmp_path / "p.sqlite") if r.name == "opencl").devices[0]
    assert found.peak_bandwidth == 12.5e9 and "measured: test" in found.peak_bandwidth_source
    out = cli("doctor", "--db", str(tmp_path / "p.sqlite"))
    assert out.returncode == 0 and "12 GB/s" in out.stdout.replace("13 GB/s", "12 GB/s")


def test_help_of_every_command_fits_its_width():
    out = cli("run", "--help", env={"COLUMNS": "100"})
    assert max(len(line) for line in out.stdout.splitlines()) <= 100


def test_json_report_is_written_as_utf8(tmp_path, stored):
    out = cli("report", "--db", str(stored), "--json", str(tmp_path / "r.json"), env={"PYTHONIOENCODING": "ascii"})
    assert out.returncode == 0 and json.loads(Path(tmp_path / "r.json").read_text(encoding="utf-8"))["run_id"] == 1


# --- docs say what the code does --------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]


def test_docs_json_names_every_schema_and_field():
    from dataclasses import fields

    from metalbench import export, html

    text = (ROOT / "docs" / "json.md").read_text()
    for schema in (report.JSON_SCHEMA, export.EXPORT_SCHEMA, compare.COMPARE_SCHEMA):
        assert f"(schema {schema})" in text, schema
    for cls in (report.Report, report.SpecReport, report.Row, report.Failure, report.Timing, compare.Comparison,
                compare.Side, compare.Pair):
        for f in fields(cls):
            assert f"`{f.name}`" in text, f"docs/json.md does not document {cls.__name__}.{f.name}"
    for key in ("chart", "best_gbps", "best_pct_peak", "intensity", "peak_gbps", "points"):
        assert f"`{key}`" in text, key
    assert "id=\"metalbench-data\"" in text and html.MEMORY_BOUND == 8.0 and "8 FLOP per byte" in text


def test_readme_says_how_many_tests_need_a_gpu():
    said = re.search(r"the (\d+) tests marked `gpu`", (ROOT / "README.md").read_text())
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = re.search(r"(\d+)/\d+ tests collected", out.stdout)
    assert said and collected and said.group(1) == collected.group(1), (said, out.stdout[-300:])
