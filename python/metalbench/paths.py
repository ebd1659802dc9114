"""Where metalbench keeps what outlives a run: reference cache and result store."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

_APP = "metalbench"


def cache_dir() -> Path:
    """Root of disposable caches (references, compiled kernels); METALBENCH_CACHE_DIR overrides."""
    override = os.environ.get("METALBENCH_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(_APP))


def default_store() -> Path:
    """The SQLite result store; METALBENCH_DB overrides. Results are data, not cache."""
    override = os.environ.get("METALBENCH_DB")
    return Path(override) if override else Path(platformdirs.user_data_dir(_APP)) / "results.sqlite"


def kernels_dir() -> Path:
    """The built-in kernel families: inside the installed package, or the source tree's."""
    installed = Path(__file__).resolve().parent / "kernels"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "kernels"
