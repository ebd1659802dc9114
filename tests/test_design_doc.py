"""docs/design.md names real things: every file it cites exists, and every symbol it cites is defined.

The page says how the code is put together; when a file is renamed or a function
moves, this test fails until the page follows. A citation is text in backticks:
- a path (a `/` or a file suffix): a file or folder of the repository, with `{a,b}`
  alternatives expanded and `<name>` standing for any one name, from the root or a
  folder below it (`core/abi.cpp` is csrc/core/abi.cpp); a bare file name
  (`runner.py`, `common.h`) is a file of that name anywhere in the sources;
- `module.name` (or `module.Class.attr`) where `module` is a metalbench module: an
  attribute found by importing it;
- a C, C++ or MSL identifier (`MBParams`, `Device::measuring`, `WS_PUT`): a word that
  occurs in the native sources (csrc/, kernels/).
Commands, options, values and expressions in backticks are left alone.
"""

import importlib
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "python" / "metalbench"
SUFFIXES = (".py", ".h", ".cpp", ".mm", ".c", ".cu", ".toml", ".md", ".txt", ".metallib")
NATIVE = [p for folder in ("csrc", "kernels") for p in (ROOT / folder).rglob("*")
          if p.suffix in (".h", ".cpp", ".mm", ".c", ".cu") and p.is_file()]


def citations() -> list[str]:
    return sorted(set(re.findall(r"`([^`\n]+)`", PAGE.read_text())))


def _expand(text: str) -> list[str]:
    parts = re.split(r"\{([^{}]*)\}", text)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _is_path(text: str) -> bool:
    return (("/" in text and not text.startswith("/")) or text.endswith(SUFFIXES)) and " " not in text


FOLDERS = ("python", "csrc", "kernels", "tests", "benchmarks", "docs", "scripts")
SOURCES = [ROOT / f for f in FOLDERS] + [p for f in FOLDERS for p in (ROOT / f).rglob("*")
                                         if "__pycache__" not in p.parts]


def _path_exists(text: str) -> bool:
    for candidate in _expand(text.rstrip("/")):
        if "/" not in candidate:  # a bare file name: anywhere in the sources
            if not any(p.name == candidate for p in SOURCES):
                return False
            continue
        pattern = re.escape(candidate).replace(r"<", "<").replace(r">", ">")
        pattern = re.sub(r"<[^<>/]*>", "[^/]+", pattern)
        # A path may start below the repository's root (`core/abi.cpp` is csrc/core/abi.cpp).
        if not any(re.search(rf"(^|/){pattern}$", p.relative_to(ROOT).as_posix()) for p in SOURCES):
            return False
    return True


def _module_attr(text: str) -> tuple[str, list[str]] | None:
    head, *rest = re.sub(r"\(.*\)$", "", text).split(".")
    if rest and (PACKAGE / f"{head}.py").is_file() and all(r.isidentifier() for r in rest):
        return head, rest
    return None


def _native_word(text: str) -> bool:
    words = [w for w in re.split(r"::", re.sub(r"\(.*\)$", "", text)) if w]
    sources = "\n".join(p.read_text(errors="replace") for p in NATIVE)
    return all(re.search(rf"\b{re.escape(w)}\b", sources) for w in words)


def test_the_page_cites_things():
    assert len(citations()) > 50


@pytest.mark.parametrize("cited", [c for c in citations() if _is_path(c)])
def test_every_cited_file_exists(cited):
    assert _path_exists(cited), f"docs/design.md cites `{cited}`, which is not in the repository"


@pytest.mark.parametrize("cited", [c for c in citations() if not _is_path(c) and _module_attr(c)])
def test_every_cited_python_symbol_is_defined(cited):
    module, attrs = _module_attr(cited)  # type: ignore[misc]
    obj = importlib.import_module(f"metalbench.{module}")
    for name in attrs:
        assert hasattr(obj, name), f"docs/design.md cites `{cited}`, but {module} has no {name}"
        obj = getattr(obj, name)


NATIVE_CITED = [c for c in citations() if not _is_path(c) and not _module_attr(c)
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(\(\))?", c)
                and (c[0].isupper() or "::" in c or "_" in c) and not c.islower()]


@pytest.mark.parametrize("cited", NATIVE_CITED)
def test_every_cited_native_name_occurs_in_the_sources(cited):
    python = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert _native_word(cited) or re.search(rf"\b{re.escape(cited.rstrip('()'))}\b", python), \
        f"docs/design.md cites `{cited}`, which no source defines or uses"
