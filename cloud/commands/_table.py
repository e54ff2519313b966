"""Tables for the fleet commands: never a truncated id.

On a terminal wide enough for every cell at full length the table is drawn with rich. When the
output is piped, the terminal is narrower, or with `--wide`, it is plain text in aligned columns at full width, one line per row,
which `grep`, `awk` and `head` read as they expect.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["add_wide_argument", "print_table"]


def add_wide_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wide",
        action="store_true",
        help="plain columns at full width (what a pipe gets), whatever the terminal's width",
    )


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, wide: bool = False
) -> None:
    widths = _widths(columns, rows)
    if wide or not sys.stdout.isatty():
        _print_plain(columns, rows, widths)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if sum(widths) + 3 * len(widths) + 1 > console.width:  # too narrow to draw it whole
        _print_plain(columns, rows, widths)
        return
    table = Table(title=title)
    for col, width in zip(columns, widths, strict=True):
        table.add_column(col, min_width=width, no_wrap=True)
    for r in rows:
        table.add_row(*r)
    console.print(table)


def _widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(columns)]


def _print_plain(columns: Sequence[str], rows: Sequence[Sequence[str]], widths: list[int]) -> None:
    for line in (columns, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    sys.stdout.flush()
