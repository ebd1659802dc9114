"""The CLI's standard streams and output files: made safe before any command runs, checked
before any work, and the consoles on them.

- A closed standard output (`metalbench run >&-`) is refused before any work, in one
  line: a report written to nowhere is a run lost. A closed standard error is replaced
  by /dev/null (the exit status still tells).
- A stream whose encoding cannot write what the report prints (`PYTHONIOENCODING=ascii`,
  a C locale) writes plain ASCII stand-ins instead ("·" as "-", "×" as "x", box lines
  as - and |), so a sweep never fails at its report. Rich draws its own tables in ASCII
  there already.
- Every string a user wrote (a suite, family or variant name, a path, a message
  quoting them) reaches rich through `escape`, so that "mk[/]" is shown as written,
  never read as console markup.
"""

from __future__ import annotations

import codecs
import os
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from .errors import InputError

__all__ = ["PIPED_WIDTH", "ClosedOutput", "Outputs", "UsageProblem", "err_console", "escape", "is_stdout",
           "out_console", "prepare_streams", "writable"]

# Printable stand-ins for the characters metalbench's output uses, on an ASCII stream.
_PLAIN = {"·": "-", "×": "x", "±": "+/-", "—": "-", "–": "-", "→": "->", "←": "<-", "…": "...", "µ": "u",
          "≤": "<=", "≥": ">=", "≈": "~", "━": "-", "─": "-", "┃": "|", "│": "|", "╇": "+", "┼": "+", "╋": "+",
          "✓": "ok", "✗": "x", "★": "*", "•": "*", "’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " "}
_HANDLER = "metalbench.plain"


def _plain(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    chunk = error.object[error.start:error.end]
    return "".join(_PLAIN.get(c, "?") for c in chunk), error.end


codecs.register_error(_HANDLER, _plain)


class UsageProblem(InputError, ValueError):
    """A command-line value that cannot be used; the message names the option."""


class ClosedOutput(Exception):
    """Standard output is closed: nothing metalbench prints could be read."""


def _utf(stream: TextIO) -> bool:
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "").startswith("utf")


def prepare_streams() -> None:
    """Makes the standard streams safe to print to (the module's docstring); ClosedOutput
    when standard output is closed."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    if sys.stdout is None:
        raise ClosedOutput("standard output is closed; redirect it instead (> FILE, or > /dev/null with "
                           "--quiet) so that the report has somewhere to go")
    for stream in (sys.stdout, sys.stderr):
        if not _utf(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=_HANDLER)


class _Console(Console):
    """A console that leaves a closed pipe to the CLI (rich's own would exit with status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


# Output that is not a terminal (a pipe, a file, a CI log) is read later, often in a wide
# editor: tables there are laid out for this many columns, never cut to 80.
PIPED_WIDTH = 200


def _width(stream: TextIO) -> int | None:
    try:
        return None if stream.isatty() else PIPED_WIDTH
    except (AttributeError, ValueError):
        return PIPED_WIDTH


def out_console() -> Console:
    """The console on standard output."""
    return _Console(file=sys.stdout, highlight=False, width=_width(sys.stdout))


def err_console() -> Console:
    """The console on standard error: progress, notes, and the report when stdout carries data."""
    return _Console(file=sys.stderr, stderr=True, highlight=False, width=_width(sys.stderr))


class Outputs:
    """The files a report is also written to; None where not asked for, '-' for standard
    output (one of them at most: the rich report then goes to standard error). Each is
    checked when asked for, so that a path that cannot be written fails before any work,
    not after it."""

    def __init__(self, json_path: Path | None = None, csv_path: Path | None = None,
                 markdown_path: Path | None = None, html_path: Path | None = None) -> None:
        self.json, self.csv, self.markdown, self.html = json_path, csv_path, markdown_path, html_path
        asked = [(path, option) for path, option in ((json_path, "--json"), (csv_path, "--csv"),
                                                     (markdown_path, "--markdown"), (html_path, "--html"))
                 if path is not None]
        dashes = [option for path, option in asked if is_stdout(path)]
        if len(dashes) > 1:
            raise UsageProblem(f"{' and '.join(dashes)} both ask for standard output ('-'); give one of them a file")
        self.to_stdout = bool(dashes)
        for path, option in asked:
            if not is_stdout(path):
                writable(path, option)

    def console(self, quiet: bool) -> Console:
        """Where the rich report goes: nowhere with --quiet, stderr when stdout carries data."""
        if quiet:
            return Console(quiet=True)
        return err_console() if self.to_stdout else out_console()


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def writable(path: Path, option: str, folder: bool = False) -> None:
    """UsageProblem unless `path` (a file, or with `folder` a folder that may be made) can be written."""
    if folder:
        target = next(p for p in (path, *path.parents) if p.exists())
        if not target.is_dir():
            raise UsageProblem(f"{option} {path}: {target} is not a folder")
    else:
        if path.is_dir():
            raise UsageProblem(f"{option} {path}: is a folder; give a file name")
        target = path.parent if str(path.parent) else Path(".")
        if not target.is_dir():
            raise UsageProblem(f"{option} {path}: no folder {target}")
    if not os.access(target, os.W_OK):
        raise UsageProblem(f"{option} {path}: {target} is not writable")
