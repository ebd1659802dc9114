"""`metalbench`: run suites, list what there is, show stored reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import _core, report, runner, specs, store, variants
from .expr import ExprError
from .reference import ReferenceCache
from .store import Result, Store

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the fastest correct GPU matmul kernel for every shape your model runs.")
# Piped or redirected output is read later, often in a wide editor: never truncate it.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 2) -> None:
    # Plain print: an error message is one line whatever the terminal's width.
    print(f"metalbench: error: {message}", file=sys.stderr)
    sys.exit(code)

# What a user can get wrong: each is reported as one line, never a traceback.
USER_ERRORS = (specs.SuiteError, specs.SpecError, variants.ManifestError, ExprError, runner.BackendError,
               store.StoreError, _core.UsageError, _core.UnavailableError, ValueError, OSError)

KernelsOpt = Annotated[list[Path] | None, typer.Option("--kernels", help="Extra folder of family manifests; "
                                                       "may be repeated.", show_default=False)]
DbOpt = Annotated[Path | None, typer.Option("--db", help="Result store (default: METALBENCH_DB or the user "
                                            "data folder).", show_default=False)]


class _Bar(runner.Events):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("sweep", total=None, what="")

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def result(self, spec: specs.Spec, result: Result) -> None:
        self.progress.update(self.task, advance=1, what=f"{spec.label()}  {result.variant}")

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {message}")


def _open_store(db: Path | None) -> Store:
    from .paths import default_store

    return Store(db or default_store())


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="Built-in suite name or path to a suite TOML.")] = "qwen2.5-0.5b-decode",
    backend: Annotated[str, typer.Option(help="auto, metal, cuda or opencl.")] = "auto",
    device: Annotated[int, typer.Option(help="Device index within the backend.")] = 0,
    variants_glob: Annotated[list[str] | None, typer.Option("--variants", help="Glob over variant ids "
                             "(e.g. 'gemv/*'); may be repeated. The baseline always runs.",
                             show_default=False)] = None,
    warmup: Annotated[int, typer.Option(help="Untimed launches before sampling.")] = 3,
    iterations: Annotated[int, typer.Option(help="Most timed launches per variant and spec.")] = 100,
    max_seconds: Annotated[float, typer.Option(help="Time budget for each kind of sample; "
                                               "slow kernels take fewer (at least 5).")] = 0.5,
    cold: Annotated[bool, typer.Option("--cold", help="Flush the device cache before every timed launch.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Measure again even where a stored result matches.")]
    = False,
    kernels: KernelsOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.",
                                                   show_default=False)] = None,
    verbose_failures: Annotated[bool, typer.Option("--verbose-failures", help="List every failure with its "
                                                   "compiler log.")] = False,
    db: DbOpt = None,
) -> None:
    """Sweep the variants over a suite, verify each output, time it, store and report the results."""
    # The user's own files are checked first: their mistakes are worth hearing about
    # even on a machine where no backend can run.
    the_suite = specs.load_suite(suite)
    every = variants.load_variants(None, kernels or [])
    chosen_backend = runner.pick_backend(backend)
    available = [v for v in every if chosen_backend in v.family.backends]
    chosen = runner.with_baseline(available, chosen_backend, variants_glob or [])
    if not chosen:
        raise runner.BackendError(f"no variant matches {variants_glob} on {chosen_backend}")
    settings = runner.Settings(warmup=warmup, iterations=iterations, max_seconds=max_seconds, cold=cold)
    results = _open_store(db)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[what]}"))
    with Progress(*columns, console=err, transient=True) as progress:
        try:
            run_id = runner.run(the_suite, chosen, backend=chosen_backend, store=results, device=device,
                                settings=settings, force=force, cache=ReferenceCache(), events=_Bar(progress))
        except KeyboardInterrupt:
            progress.stop()
            last = results.latest_run()
            err.print(f"interrupted: every result measured so far is stored (run {last}); "
                      f"`metalbench report {last}` shows them, and a rerun reuses them")
            raise typer.Exit(130) from None
        except runner.DeviceLost as e:
            progress.stop()
            _fail(f"{e} (`metalbench report {results.latest_run()}` shows what was stored)", code=1)
    _show(results, run_id, json_path, verbose_failures)


def _show(results: Store, run_id: int, json_path: Path | None, verbose_failures: bool) -> None:
    rep = report.build(results.load_run(run_id))
    report.render(rep, console, verbose_failures)
    if json_path:
        report.write_json(rep, json_path)
        console.print(f"JSON report written to {json_path}")


@app.command("report")
def show_report(
    run_id: Annotated[int | None, typer.Argument(help="Run id (default: the newest).", show_default=False)]
    = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.",
                                                   show_default=False)] = None,
    verbose_failures: Annotated[bool, typer.Option("--verbose-failures")] = False,
    db: DbOpt = None,
) -> None:
    """Show the report of a stored run."""
    results = _open_store(db)
    run_id = run_id if run_id is not None else results.latest_run()
    if run_id is None:
        raise store.StoreError(f"{results.path}: no runs stored yet")
    _show(results, run_id, json_path, verbose_failures)


@app.command()
def devices() -> None:
    """List every backend in this build and its devices, or why it cannot run here."""
    table = Table(show_edge=False, pad_edge=False)
    for name in ("backend", "#", "device", "vendor", "units", "memory", "max group", "driver"):
        table.add_column(name)
    for name in _core.backends():
        reason = _core.unavailable_reason(name)
        if reason:
            table.add_row(name, "-", f"[dim]unavailable: {reason}[/]", "", "", "", "", "")
            continue
        for d in _core.devices(name):
            table.add_row(name, str(d["index"]), d["name"], d["vendor"], str(d["compute_units"]),
                          f"{d['memory_bytes'] / 2**30:.1f} GiB", str(d["max_group_size"]), d["driver"])
    console.print(table)


@app.command()
def doctor() -> None:
    """What this machine can run: each backend, its devices, and how each would be timed."""
    from . import doctor as checkup

    checkup.render(checkup.diagnose(), console)


@app.command("list")
def list_(
    suite: Annotated[str | None, typer.Option(help="Also show which variants support each spec of this suite.",
                                              show_default=False)] = None,
    kernels: KernelsOpt = None,
) -> None:
    """List suites, kernel families and their variants."""
    console.print("[bold]suites[/]")
    for name in specs.builtin_suites():
        s = specs.load_suite(name)
        console.print(f"  {name}: {len(s.specs)} specs. {s.description}")
    console.print("\n[bold]families[/]")
    for family in variants.load_families(kernels or []):
        expanded = variants.expand(family)
        role = f" [{family.baseline} baseline]" if family.baseline else ""
        console.print(f"  {family.name}{role} ({', '.join(family.backends)}; {', '.join(family.dtypes)}): "
                      f"{family.description}")
        console.print("    " + " ".join(v.id for v in expanded))
    if suite:
        s = specs.load_suite(suite)
        every = variants.load_variants(None, kernels or [])
        console.print(f"\n[bold]specs of {s.name} and the variants that support them[/]")
        for i, spec in enumerate(s.specs):
            ok = [v.id for v in every if v.unsupported_reason(spec) is None]
            console.print(f"  [{i}] {spec.label()}: {len(ok)} variants")
            console.print("      " + " ".join(ok), soft_wrap=True)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except (*USER_ERRORS, _core.CompileError) as e:
        _fail(str(e))
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click's own usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
