"""Plain-text tables: the one printer of the command line, the demo and the benchmarks."""

from __future__ import annotations

__all__ = ["format_table", "print_table"]


def format_table(rows, header=None) -> str:
    """Rows as left-aligned columns, two spaces apart, under a header and a dashed rule.

    Parameters
    ----------
    rows : list of dict or list of sequences
        Dicts: the columns are the first row's keys, in order. Sequences: one
        cell per name in ``header``. Cells are written with ``str``; format
        numbers before (e.g. ``f"{x:.3g}"``).
    header : list of str, optional
        Column names; required for sequences.

    Returns
    -------
    str
        The table without a final newline; ``"  none"`` for no rows and no header.

    Examples
    --------
    >>> rows = [["E1", "yes"], ["E22", "no"]]
    >>> print(format_table(rows, header=["exhibit", "same"]))  # doctest: +NORMALIZE_WHITESPACE
    exhibit  same
    -------  ----
    E1       yes
    E22      no
    """
    if header is None:
        if not rows:
            return "  none"
        header = list(rows[0])
        rows = [[r[k] for k in header] for r in rows]
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(rows, header=None) -> None:
    """Print `format_table` of ``rows``."""
    print(format_table(rows, header))
