"""Terminal tables that fit the console's width without ever cutting a number.

A column is text (a variant id, a spec label, tags: wrapped at its spaces onto more
lines when space is short) or a number (kept whole, on one line, always). When even the narrowest
layout is wider than the console, whole columns are left out, the least useful first
(each column says how useful it is), and the caller is told which, so it can say so.
Cells are plain text: they are escaped here, so a name like "mk[/]" is shown as it is.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.markup import escape
from rich.table import Table

__all__ = ["OPTIONAL", "Column", "Layout", "fit", "table"]

# Text wraps at its spaces; a single word longer than this (an id) may be folded.
_TEXT_WORD = 40
# What a table with show_edge=False and pad_edge=False adds per column: one space of
# padding on each side and a rule between columns, less the outer padding.
_PER_COLUMN = 3
_EDGES = 3


@dataclass
class Column:
    """One column: its header, whether it holds numbers, and its rank when space is short
    (a lower `keep` is left out first; 0 never is; up to OPTIONAL, it is left out before
    any text is folded)."""

    header: str
    numeric: bool = False
    keep: int = 0
    styles: dict[int, str] = field(default_factory=dict)  # cell styles by row: markup wrapped around the text

    def natural(self, cells: Sequence[str]) -> int:
        """The width that shows every cell and the header on one line."""
        return max([len(c) for c in cells] + [len(self.header)])

    def narrowest(self, cells: Sequence[str]) -> int:
        """The narrowest this column can be: numbers whole on one line, text wrapped at its
        spaces (a word longer than _TEXT_WORD is folded), header words whole."""
        words = max((len(w) for w in self.header.split()), default=0)
        if self.numeric:
            return max(max([len(c) for c in cells] or [0]), words)
        longest = max((len(w) for c in cells for w in c.split()), default=0)
        return max(min(longest, _TEXT_WORD), min(words, _TEXT_WORD), 1)


# Columns this useful or less are left out before any text column is folded.
OPTIONAL = 3


@dataclass
class Layout:
    """The columns shown (by index) and the width each gets; the headers of those left out."""

    shown: list[int]
    widths: dict[int, int]
    dropped: list[str]


def _total(widths: Sequence[int]) -> int:
    return sum(widths) + _PER_COLUMN * len(widths) - _EDGES


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> Layout:
    """The layout of `columns` within `width` for these rows (`width` None: no limit).

    First every column at its natural width (left out: those up to OPTIONAL, least useful
    first, until it fits); else text folded and numbers' headers wrapped, leaving out
    columns least useful first until it fits. Room left over widens number columns, so
    that their headers wrap less."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    natural = [c.natural(cells[i]) for i, c in enumerate(columns)]
    narrowest = [c.narrowest(cells[i]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    dropped: list[str] = []
    order = sorted(range(len(columns)), key=lambda i: columns[i].keep)
    if width is None:
        return Layout(shown, {i: natural[i] for i in shown}, dropped)
    for i in order:
        if _total([natural[j] for j in shown]) <= width:
            return Layout(shown, {j: natural[j] for j in shown}, dropped)
        if 0 < columns[i].keep <= OPTIONAL:
            shown.remove(i)
            dropped.append(columns[i].header)
    if _total([natural[j] for j in shown]) <= width:
        return Layout(shown, {j: natural[j] for j in shown}, dropped)
    # Leaving out what is optional was not enough: fold text instead, every column back,
    # and leave out only what must go.
    shown, dropped = list(range(len(columns))), []
    for i in order:
        if _total([narrowest[j] for j in shown]) <= width:
            break
        if columns[i].keep and i in shown:
            shown.remove(i)
            dropped.append(columns[i].header)
    widths = {j: narrowest[j] for j in shown}
    slack = width - _total(list(widths.values()))
    # Room left over goes first to text that folds mid-word (ids with no spaces), then to
    # text that wraps at spaces, then to numbers' headers.
    def words(j: int) -> bool:
        return any(" " in c for c in cells[j])

    texts = [j for j in shown if not columns[j].numeric]
    for j in sorted(texts, key=words) + [j for j in shown if columns[j].numeric]:
        grow = min(max(slack, 0), natural[j] - widths[j])
        widths[j] += grow
        slack -= grow
    return Layout(shown, widths, dropped)


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], layout: Layout, title: str | None = None,
          row_styles: Sequence[str | None] | None = None) -> Table:
    """A rich table of the layout's columns; cells are escaped, numbers right-aligned and never wrapped."""
    out = Table(title=escape(title) if title is not None else None, title_justify="left", show_edge=False,
                pad_edge=False)
    for i in layout.shown:
        c, width = columns[i], layout.widths[i]
        if c.numeric:
            # A number is never wrapped, and so neither is its column's header: wrapped here
            # by hand to the column's width, at spaces.
            header = "\n".join(textwrap.wrap(c.header, width)) if len(c.header) > width else c.header
            out.add_column(escape(header), justify="right", no_wrap=True, width=width)
        else:
            out.add_column(escape(c.header), justify="left", overflow="fold", width=width)
    for r, row in enumerate(rows):
        cells = []
        for i in layout.shown:
            text = escape(row[i])
            style = columns[i].styles.get(r)
            cells.append(f"[{style}]{text}[/]" if style and text else text)
        out.add_row(*cells, style=row_styles[r] if row_styles else None)
    return out
