"""How `metalbench --help` reads: placeholders and help text as written.

typer shows Python types as an option's placeholder (<int>, <list[Path]>, <bool>) and
reads help text as rich markup, so "pip install 'metalbench[ray]'" prints as
"'metalbench'". `command` returns the click command typer makes of an app with every
option given a word for its value (none for a flag) and its help escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import typer

from .cli_io import escape

__all__ = ["command"]

# Placeholders shown in --help for option values (typer would show Python types: <int>,
# <list[Path]>); flags show none.
_METAVARS = {"device": "INDEX", "workers": "N", "warmup": "N", "min_samples": "N", "max_samples": "N",
             "min_time": "SECONDS", "max_time": "SECONDS", "timeout": "SECONDS", "max_noise": "FRACTION",
             "kernels": "DIR", "db": "FILE", "db_b": "FILE", "json_path": "FILE|-", "csv_path": "FILE|-",
             "markdown_path": "FILE|-", "html_path": "FILE|-", "out": "DIR", "name": "NAME", "run_id": "RUN",
             "config": "CONFIG.JSON"}
_BY_TYPE = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def command(app: typer.Typer) -> Any:
    """The click command typer makes of `app`, every option given a placeholder (not a
    Python type) and help that typer's rich renderer shows as written ('metalbench[ray]'
    stays, not 'metalbench')."""
    made = typer.main.get_command(app)

    def polish(cmd: object) -> None:
        for param in getattr(cmd, "params", []):
            if getattr(param, "help", None):
                param.help = escape(param.help)
            if getattr(param, "is_flag", False) or getattr(param, "is_bool_flag", False):
                param.metavar = ""
            elif param.metavar is None:
                kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
                kind = get_args(kind)[0] if get_args(kind) else kind  # list[Path] -> Path
                param.metavar = _METAVARS.get(param.name, _BY_TYPE.get(kind, "VALUE"))
            if getattr(param, "param_type_name", "") == "argument":
                param.display_type_rich = lambda ctx: None  # its placeholder says it all
        shown = cmd.get_help_option  # type: ignore[attr-defined]

        def help_option(ctx: object, shown: object = shown) -> object:
            option = shown(ctx)  # type: ignore[operator]
            if option is not None:
                option.metavar = ""
            return option

        cmd.get_help_option = help_option  # type: ignore[attr-defined]
        for sub in getattr(cmd, "commands", {}).values():
            polish(sub)

    polish(made)
    return made
