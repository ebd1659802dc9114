"""`metalbench`: run suites, list what there is, show stored reports.

Exit codes: 0 done; 1 a run that could not finish (the device was lost, the store
could not be written or is damaged), `compare` found a regression, or metalbench
itself failed (a bug: the line names the file its traceback was saved to); 2 a usage
error (a bad option or value, a malformed suite or manifest, a --variants glob that
matches nothing, a run that cannot be exported, two runs with nothing to compare,
--html without the plot extra, a closed standard output); 130 interrupted (Ctrl-C),
143 terminated (SIGTERM), 129 hung up (SIGHUP): the run is stored as interrupted;
141 the reader of standard output went away (a closed pipe). Every error is one line
on stderr, starting with "metalbench: error:" (or "metalbench: internal error:" for a
bug).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from . import (
    __version__,
    _core,
    backends,
    cli_help,
    compare,
    export,
    formats,
    report,
    roofline,
    runner,
    specs,
    store,
    tables,
    variants,
)
from . import html as html_page
from .cli_io import (
    ClosedOutput,
    Outputs,
    UsageProblem,
    err_console,
    escape,
    is_stdout,
    out_console,
    prepare_streams,
    writable,
)
from .cli_progress import progress_for
from .cli_suite import suite_app
from .errors import InputError
from .ray_pool import ray_available
from .results import CLOCKS
from .settings import Settings, SettingsError
from .store import MissingRun, Store
from .ties import TIE_FLOOR

# -h as well as --help, everywhere.
_CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=_CONTEXT,
                  help="Find the fastest correct GPU matmul kernel for every shape your model runs.")
app.add_typer(suite_app, name="suite", context_settings=_CONTEXT)

USAGE = 2
UNFINISHED = 1
INTERRUPTED = 130
# Exit status after a signal, as a shell reports a process the signal ended: 128 + its number.
_SIGNALS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGHUP: 128 + signal.SIGHUP}
CLOSED_PIPE = 128 + signal.SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is (the run is stored as interrupted); `code` is the exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.code = _SIGNALS.get(signum, 128 + signum)


def _on_signal(signum: int, frame: object) -> None:
    # A second signal while the run is being wound up ends the process at once.
    signal.signal(signum, signal.SIG_DFL)
    raise Terminated(signum)


def _version(value: bool) -> None:
    if value:
        print(f"metalbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find the fastest correct GPU matmul kernel for every shape your model runs."""


# What a user can get wrong: each is reported as one line, never a traceback. Every
# other exception is a bug of metalbench's own (main()).
USER_ERRORS = (InputError, _core.UsageError, _core.UnavailableError, _core.CompileError)
# What stops a run that was started right: the device, the store, or a worker's own bug.
RUN_ERRORS = (runner.DeviceLost, runner.WorkerError, store.StoreError, _core.DeviceError)


def _fail(message: str, code: int) -> NoReturn:
    # Plain print: an error message is one line whatever the terminal's width.
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"metalbench: error: {first}", file=sys.stderr)
    sys.exit(code)


KernelsOpt = Annotated[list[Path] | None, typer.Option("--kernels", help="Extra folder of family manifests; "
                                                       "may be repeated (default: the built-in families only).",
                                                       show_default=False)]
DbOpt = Annotated[Path | None, typer.Option("--db", help="Result store (default: METALBENCH_DB or the user "
                                            "data folder).", show_default=False)]
RankOpt = Annotated[str | None, typer.Option("--rank-by", metavar="batch|gpu|cpu",
                                             help="Clock that tags the best variant: batch "
                                             "(launches back to back, as a decode loop runs them), gpu (each launch "
                                             "on its own) or cpu (submit to completion) (default: the clock the "
                                             "run measured to converge).", show_default=False)]
TieOpt = Annotated[float, typer.Option("--tie", metavar="PERCENT", help="Variants within this many percent of "
                                       "the best tie with it (as do those whose confidence intervals overlap).")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here ('-': to "
                                              "standard output, the table then to standard error).",
                                              show_default=False)]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write every variant x spec as CSV here ('-': "
                                             "to standard output).", show_default=False)]
MarkdownOpt = Annotated[Path | None, typer.Option("--markdown", help="Also write the report as Markdown (GitHub) "
                                                  "here ('-': to standard output).", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print no progress and no report: only notes "
                                        "and errors, on standard error (files asked for are still written).")]


def _open_store(db: Path | None, readonly: bool = False) -> Store:
    from .paths import default_store

    return Store(db or default_store(), readonly=readonly)


# The defaults of `run`'s measurement options: Settings', which are the core's.
_SETTINGS = Settings()
# The options of `run` that are measurement settings, by Settings field.
_SETTING_OPTIONS = {"warmup": "--warmup", "min_samples": "--min-samples", "max_samples": "--max-samples",
                    "min_time": "--min-time", "max_time": "--max-time", "max_noise": "--max-noise",
                    "rank_by": "--rank-by"}


def _settings(**values: object) -> Settings:
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except SettingsError as e:
        text = str(e)
        for name, option in _SETTING_OPTIONS.items():
            text = text.replace(f"setting {name}", option)
        raise UsageProblem(text) from None


def _choose(available: list[variants.Variant], backend: str, patterns: list[str],
            suite: specs.Suite) -> list[variants.Variant]:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(v.id, pattern) for v in available):
            families = sorted({v.family.name for v in available})
            raise UsageProblem(f"--variants {pattern!r} matches no variant on {backend} "
                               f"(families there: {', '.join(families)}; `metalbench list` shows every variant)")
    return runner.with_baseline(available, backend, patterns, specs=suite.specs)


@app.command()
def run(
    suite: Annotated[str, typer.Option(metavar="NAME|FILE", help="Built-in suite name (`metalbench list`) or "
                                       "path to a suite TOML.")] = "qwen2.5-0.5b-decode",
    backend: Annotated[str, typer.Option(metavar="auto|metal|cuda|opencl", help="The backend to run on; auto "
                                         "picks the first of Metal, CUDA and OpenCL that can run here.")] = "auto",
    device: Annotated[int, typer.Option(help="Device index within the backend (`metalbench devices`).")] = 0,
    devices_opt: Annotated[str | None, typer.Option("--devices", metavar="all|I,J,...",
                                                    help="Several devices of one model, sharing "
                                                    "the sweep: 'all' or indices like 0,1 (default: --device).",
                                                    show_default=False)] = None,
    workers: Annotated[int, typer.Option(help="Worker processes per device (more overlap compiling with "
                                         "measuring); with --ray and a backend Ray counts no GPUs of, the "
                                         "number of actors.")] = 1,
    ray: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS|auto|local",
                                            help="Measure on a Ray cluster: its address, 'auto', or "
                                            "'local' for a new instance here (pip install 'metalbench[ray]'; "
                                            "default: worker processes on this machine).",
                                            show_default=False)] = None,
    variants_glob: Annotated[list[str] | None, typer.Option("--variants", metavar="GLOB", help="Glob over "
                             "variant ids (e.g. 'gemv/*'); may be repeated (default: every variant). The baseline "
                             "always runs.",
                             show_default=False)] = None,
    warmup: Annotated[int, typer.Option(help="Untimed launches before sampling.")] = _SETTINGS.warmup,
    min_samples: Annotated[int, typer.Option(help="Fewest samples of each clock.")] = _SETTINGS.min_samples,
    max_samples: Annotated[int, typer.Option(help="Most samples of each clock.")] = _SETTINGS.max_samples,
    min_time: Annotated[float, typer.Option(help="Seconds of samples the ranking clock needs before it may "
                                            "stop.")] = _SETTINGS.min_time,
    max_time: Annotated[float, typer.Option(help="Seconds of measuring a variant x spec pair may take, all "
                                            "clocks together (a budget, not a hang limit).")] = _SETTINGS.max_time,
    max_noise: Annotated[float, typer.Option(help="The ranking clock samples until its relative standard "
                                             "deviation is at most this (0.005 = 0.5%).")] = _SETTINGS.max_noise,
    rank_by: RankOpt = None,
    cold: Annotated[bool, typer.Option("--cold", help="Each launch reads its own copy of the inputs, rotated so "
                                       "that none is in the last-level cache.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Measure again even where a stored result matches "
                                        "(timeouts and crashes included).")] = False,
    race: Annotated[bool, typer.Option("--race/--no-race", help="Time every variant briefly first and measure "
                                       "fully only those that may tie with the fastest.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds a pair may take before its worker is stopped and the "
                                           "pair stored as a timeout.")] = runner.DEFAULT_TIMEOUT,
    kernels: KernelsOpt = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    markdown_path: MarkdownOpt = None,
    verbose_failures: Annotated[bool, typer.Option("--verbose-failures", help="List every failure with its "
                                                   "compiler log.")] = False,
    tie: TieOpt = 100 * TIE_FLOOR,
    db: DbOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Sweep the variants over a suite, verify each output, time it, store and report the results.

    A rerun measures only what changed; when it measures nothing, it is still a run of
    its own (every result reused), and its report says so.
    """
    # The user's own files and values are checked first: their mistakes are worth
    # hearing about even on a machine where no backend can run.
    settings = _settings(warmup=warmup, min_samples=min_samples, max_samples=max_samples, min_time=min_time,
                         max_time=max_time, max_noise=max_noise, rank_by=_rank(rank_by) or _SETTINGS.rank_by, cold=cold)
    if not 0 < timeout <= 86400 or timeout != timeout:
        raise UsageProblem(f"--timeout must be a number of seconds above 0 and at most 86400, got {timeout}")
    tie_floor = _tie(tie)
    the_suite = specs.load_suite(suite)
    every = variants.load_variants(None, kernels or [])
    chosen_backend = backends.pick_backend(backend)
    available = [v for v in every if chosen_backend in v.family.backends]
    chosen = _choose(available, chosen_backend, variants_glob or [], the_suite)
    if not chosen:
        raise backends.BackendError(f"no variant runs on {chosen_backend}")
    indices = _devices(devices_opt, chosen_backend)
    if ray is not None and (missing := ray_available()):
        raise UsageProblem(f"--ray: {missing}")
    outputs = Outputs(json_path, csv_path, markdown_path)
    results = _open_store(db)
    err = err_console()
    shown = progress_for(err, indices or [device], quiet)
    with shown:
        try:
            run_id = runner.run(the_suite, chosen, backend=chosen_backend, store=results, device=device,
                                devices=indices, workers=workers, ray=ray, settings=settings, force=force,
                                events=shown, timeout=timeout, race=race, tie_floor=tie_floor)
        except KeyboardInterrupt as e:
            shown.stop()
            last = results.latest_run()
            what = f"stopped by {e}" if isinstance(e, Terminated) else "interrupted"
            print(f"metalbench: {what}: every result measured so far is stored (run {last}, marked interrupted); "
                  f"`metalbench report {last}` shows them, and a rerun reuses them", file=sys.stderr, flush=True)
            raise typer.Exit(e.code if isinstance(e, Terminated) else INTERRUPTED) from None
        except RUN_ERRORS as e:
            shown.stop()
            last = results.latest_run()
            _fail(f"{e} (every result stored so far is kept; `metalbench report {last}` shows them)", UNFINISHED)
    _show(results, run_id, outputs, verbose_failures, None, tie_floor, quiet)


def _devices(text: str | None, backend: str) -> list[int] | None:
    """--devices: None (one device, --device), 'all', or comma-separated indices."""
    if text is None:
        return None
    if text.strip() == "all":
        return [d["index"] for d in _core.devices(backend)]
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageProblem(f"--devices must be 'all' or indices like 0,1, got {text!r}") from None


def _tie(percent: float) -> float:
    if not 0 <= percent <= 100 or percent != percent:
        raise UsageProblem(f"--tie must be a percentage from 0 to 100, got {percent}")
    return percent / 100


def _rank(rank_by: str | None) -> str | None:
    if rank_by is not None and rank_by not in CLOCKS:
        raise UsageProblem(f"--rank-by must be one of {', '.join(CLOCKS)}, got {rank_by!r}")
    return rank_by


def _build(results: Store, run_id: int, rank_by: str | None, tie_floor: float) -> report.Report:
    run = results.load_run(run_id)
    # Runs made before peaks were recorded with them take the store's peak for their device.
    return report.build(run, rank_by=rank_by, tie_floor=tie_floor, peak=results.peak(roofline.device_key(run.device)))


def _show(results: Store, run_id: int, outputs: Outputs, verbose_failures: bool, rank_by: str | None,
          tie_floor: float, quiet: bool = False) -> None:
    rep = _build(results, run_id, rank_by, tie_floor)
    shown = outputs.console(quiet)
    report.render(rep, shown, verbose_failures)
    for path, text, what, option in ((outputs.json, report.to_json, "JSON", "--json"),
                                     (outputs.csv, formats.to_csv, "CSV", "--csv"),
                                     (outputs.markdown, formats.to_markdown, "Markdown", "--markdown"),
                                     (outputs.html, html_page.to_html, "HTML", "--html")):
        if path is None:
            continue
        if is_stdout(path):
            sys.stdout.write(text(rep))
            sys.stdout.flush()
            continue
        try:
            path.write_text(text(rep), encoding="utf-8")
        except OSError as e:
            raise UsageProblem(f"{option} {path}: cannot write: {e.strerror or e}") from None
        shown.print(f"{what} report written to {escape(str(path))}")


@app.command("report")
def show_report(
    run_id: Annotated[int | None, typer.Argument(help="Run id (default: the newest).", show_default=False)]
    = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    markdown_path: MarkdownOpt = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML page with "
                                                   "charts here (needs the plot extra: pip install "
                                                   "'metalbench[plot]'; '-': to standard output).",
                                                   show_default=False)] = None,
    verbose_failures: Annotated[bool, typer.Option("--verbose-failures", help="List every failure with its "
                                                   "compiler log.")] = False,
    rank_by: RankOpt = None,
    tie: TieOpt = 100 * TIE_FLOOR,
    db: DbOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Show the report of a stored run (the store is only read)."""
    tie_floor, rank_by = _tie(tie), _rank(rank_by)
    if html_path:
        html_page.require_plotting()  # before any work: a missing extra is one line and exit 2
    outputs = Outputs(json_path, csv_path, markdown_path, html_path)
    results = _open_store(db, readonly=True)
    _show(results, _run_id(results, run_id), outputs, verbose_failures, rank_by, tie_floor, quiet)


def _run_id(results: Store, run_id: int | None) -> int:
    """`run_id`, or the store's newest run."""
    run_id = run_id if run_id is not None else results.latest_run()
    if run_id is None:
        raise MissingRun(f"{results.path}: no runs stored yet")
    return run_id


@app.command("export")
def export_(
    run_id: Annotated[int | None, typer.Argument(help="Run id (default: the newest).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dispatch table, its C header and one "
                                      "kernel source per winner into (made if missing).")] = Path("metalbench-export"),
    kernels: KernelsOpt = None,
    db: DbOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export each spec's best correct variant: dispatch.json, metalbench_dispatch.h and self-contained sources."""
    writable(out, "--out", folder=True)
    results = _open_store(db, readonly=True)
    run = results.load_run(_run_id(results, run_id))
    rep = report.build(run, peak=results.peak(roofline.device_key(run.device)))
    try:
        done = export.write_export(run, rep, variants.load_variants(None, kernels or []), out)
    except OSError as e:
        raise UsageProblem(f"--out {out}: cannot write: {e.strerror or e}") from None
    for warning in done.warnings:
        print(f"metalbench: warning: {warning}", file=sys.stderr)
    shown = Console(quiet=True) if quiet else out_console()
    clock = report.column(rep, rep.rank_by)
    columns = [tables.Column("spec"), tables.Column("use"), tables.Column("file", keep=4),
               tables.Column("groups", numeric=True, keep=1), tables.Column("threads", numeric=True, keep=1),
               tables.Column(clock, numeric=True)]
    rows = []
    for e in done.entries:
        t = (e.get("times") or {}).get(rep.rank_by)
        partly = " (incomplete run)" if e.get("state") == "incomplete" else ""
        use = {"vendor": f"{e.get('library')} (vendor library)", "none": f"({e.get('reason', 'none correct')})"
               }.get(e["kind"], e.get("variant", "") + partly)
        rows.append([e["label"], use, e.get("file") or "-", "x".join(map(str, e.get("groups") or [])) or "-",
                     "x".join(map(str, e.get("threads") or [])) or "-", f"{t['median_us']:.2f}" if t else "-"])
    title = f"run {run.id} ({run.suite}, {run.backend}): best per spec by {report.CLOCK_NAMES[rep.rank_by]} time, " \
        f"{rep.mode}"
    shown.print(tables.table(columns, rows, tables.fit(columns, rows, shown.width), title))
    shown.print(escape(f"wrote {done.table}, {done.header} and {len(done.sources)} kernel sources to {out}"))


@app.command("compare")
def compare_(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="Run A, the reference: a run id, or 'latest'.",
                                         show_default=False)],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="Run B, compared with A: a run id, or 'latest' (of "
                                         "--db-b's store when given).", show_default=False)],
    threshold: Annotated[float, typer.Option("--threshold", metavar="PERCENT", help="Percent slower past which a "
                                             "real change is a regression (exit status 1).")] = 5.0,
    every: Annotated[bool, typer.Option("--all", help="Show every pair, not only those that changed.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the comparison as JSON here ('-': "
                                                   "to standard output, the tables then to standard error).",
                                                   show_default=False)] = None,
    db: DbOpt = None,
    db_b: Annotated[Path | None, typer.Option("--db-b", help="Store of run B, when it is not --db's (another "
                                              "machine's, or a baseline kept by CI; default: --db).",
                                              show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare two runs pair by pair (spec x variant); exit 1 on a regression past --threshold.

    Runs with no pair in common, or a run still in progress, are refused (exit 2): a
    gate that compared nothing must not pass.
    """
    if not 0 <= threshold <= 1000 or threshold != threshold:
        raise UsageProblem(f"--threshold must be a percentage from 0 to 1000, got {threshold}")
    outputs = Outputs(json_path=json_path)
    store_a = _open_store(db, readonly=True)
    store_b = _open_store(db_b, readonly=True) if db_b else store_a
    result = compare.compare(store_a, _which(store_a, run_a), store_b, _which(store_b, run_b), threshold)
    shown = outputs.console(quiet)
    compare.render(result, shown, every)
    if json_path is not None:
        if is_stdout(json_path):
            sys.stdout.write(compare.to_json(result))
            sys.stdout.flush()
        else:
            try:
                json_path.write_text(compare.to_json(result), encoding="utf-8")
            except OSError as e:
                raise UsageProblem(f"--json {json_path}: cannot write: {e.strerror or e}") from None
            shown.print(f"JSON comparison written to {escape(str(json_path))}")
    if result.regressions:
        raise typer.Exit(UNFINISHED)


def _which(results: Store, text: str) -> int:
    """A run named on the command line: its id, or 'latest'."""
    if text == "latest":
        return _run_id(results, None)
    try:
        return int(text)
    except ValueError:
        raise UsageProblem(f"a run is a number or 'latest', got {text!r}") from None


@app.command()
def devices() -> None:
    """List every backend in this build and its devices, or why it cannot run here."""
    table = Table(show_edge=False, pad_edge=False)
    for name in ("backend", "#", "device", "vendor", "units", "memory", "max group", "driver"):
        table.add_column(name, overflow="fold")
    for name in _core.backends():
        reason = backends.unavailable_reason(name)
        if reason:
            table.add_row(name, "-", f"[dim]unavailable: {escape(reason)}[/]", "", "", "", "", "")
            continue
        for d in _core.devices(name):
            table.add_row(name, str(d["index"]), escape(d["name"]), escape(d["vendor"]), str(d["compute_units"]),
                          f"{d['memory_bytes'] / 2**30:.1f} GiB", str(d["max_group_size"]), escape(d["driver"]))
    out_console().print(table)


@app.command()
def doctor(db: DbOpt = None) -> None:
    """What this machine can run: each backend, its devices, and how each would be timed."""
    from . import doctor as checkup
    from .paths import default_store

    checkup.render(checkup.diagnose(db or default_store()), out_console())


@app.command("list")
def list_(
    suite: Annotated[str | None, typer.Option(metavar="NAME|FILE", help="Also show which variants support each "
                                              "spec of this suite.", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option(metavar="metal|cuda|opencl", help="Only the families and "
                                                "variants that run on this backend (default: every backend's).",
                                                show_default=False)] = None,
    kernels: KernelsOpt = None,
) -> None:
    """List suites, kernel families and their variants."""
    if backend is not None:
        backends.traits(backend)  # an unknown name is one line, exit 2
    console = out_console()
    console.print("[bold]suites[/]")
    for name in specs.builtin_suites():
        s = specs.load_suite(name)
        console.print(f"  {name}: {len(s.specs)} specs. {s.description}", markup=False)
    console.print("\n[bold]families[/]" + (f" that run on {backend}" if backend else ""))
    families = [f for f in variants.load_families(kernels or []) if backend is None or backend in f.backends]
    for family in families:
        expanded = variants.expand(family)
        role = f" [{family.baseline} baseline]" if family.baseline else ""
        console.print(f"  {family.name}{role} ({', '.join(family.backends)}; {', '.join(family.dtypes)}): "
                      f"{family.description}", markup=False)
        console.print("    " + " ".join(v.id for v in expanded), markup=False)
    if suite:
        s = specs.load_suite(suite)
        every = [v for f in families for v in variants.expand(f)]
        console.print(f"\n[bold]specs of {escape(s.name)} and the variants that support them[/]")
        for i, spec in enumerate(s.specs):
            ok = [v.id for v in every if v.unsupported_reason(spec) is None]
            console.print(f"  [{i}] {spec.label()}: {len(ok)} variants", markup=False)
            console.print("      " + " ".join(ok), soft_wrap=True, markup=False)


def _usage_error(e: BaseException) -> str | None:
    """The message of typer's (or click's) own usage error, or None: matched by its shape,
    since typer no longer depends on the click package and older versions raise click's."""
    if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
        return None
    message = e.format_message()  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None and getattr(ctx, "command_path", "") else ""
    return f"{message}{where}"


def main() -> None:
    """Console entry point: one line on stderr for every error, and the documented exit codes."""
    try:
        prepare_streams()
    except ClosedOutput as e:
        _fail(str(e), USAGE)
    for signum in _SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup` ignores SIGHUP: that choice stands
            signal.signal(signum, _on_signal)
    try:
        code = cli_help.command(app)(standalone_mode=False)
    except Terminated as e:
        code = e.code
    except KeyboardInterrupt:
        code = INTERRUPTED
    except BrokenPipeError:
        _closed_pipe()
    except OSError as e:
        if e.errno not in _OUTPUT_FULL:
            _internal_error(e)
        _output_full(e)
    except USER_ERRORS as e:
        _fail(str(e), USAGE)
    except RUN_ERRORS as e:
        _fail(str(e), UNFINISHED)
    except Exception as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # no arguments: the help, then the usage status
            print(e.format_message())  # type: ignore[attr-defined]
            sys.exit(USAGE)
        if type(e).__name__ == "Abort":  # older click turns Ctrl-C into Abort
            sys.exit(INTERRUPTED)
        message = _usage_error(e)
        if message is None:
            _internal_error(e)
        _fail(message, USAGE)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _closed_pipe()
    except OSError as e:
        _output_full(e)
    sys.exit(code if isinstance(code, int) else 0)


# What writing the output can meet that is no bug of metalbench's: a full disk or quota,
# a file past its size limit, a device error.
_OUTPUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _output_full(e: OSError) -> NoReturn:
    """The output could not be written (stdout on a full disk, /dev/full): one line, status 1;
    every result is in the store already."""
    with contextlib.suppress(OSError):  # so that Python's own flush at exit finds nothing left to write
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _fail(f"cannot write the output: {e.strerror or e} (every result is stored; `metalbench report` shows it "
          "again)", UNFINISHED)


def _closed_pipe() -> NoReturn:
    """The reader of standard output went away (`metalbench report | head`): stop quietly,
    with the status a shell gives a process that SIGPIPE ended. Everything is stored already."""
    # Python would flush stdout again at exit and complain; point it at /dev/null first.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(CLOSED_PIPE)


def _internal_error(e: BaseException) -> NoReturn:
    """A bug of metalbench's own: one line naming the file its traceback went to, status 1."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    where = "not saved"
    for folder in (_crash_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=time.strftime("metalbench-%Y%m%d-%H%M%S-"), suffix=".log",
                                        dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(f"metalbench {__version__}, python {sys.version.split()[0]}\n{' '.join(sys.argv)}\n\n{text}")
            where = name
            break
        except OSError:
            continue
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"metalbench: internal error: {type(e).__name__}{': ' + first if first else ''} (a bug in metalbench; "
          f"traceback saved to {where})", file=sys.stderr)
    sys.exit(UNFINISHED)


def _crash_dir() -> Path:
    from .paths import cache_dir

    return cache_dir() / "crash-logs"
