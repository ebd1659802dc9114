"""The one mark of a mistake in metalbench's input, as opposed to a bug of its own.

`InputError` is the base of every error metalbench raises for what a user gave it:
a suite or manifest field, a command-line option, a config file, a run id. The CLI
prints such an error as one line and exits with status 2; any other exception is a
bug in metalbench, printed as one line that names the log file holding its
traceback, with status 1 (cli.main). Each error keeps its older base class too
(ValueError, LookupError, ...) for callers that catch those.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(Exception):
    """Bad input, named in the message by its place: the file, field, option or value."""
