"""The one table printer: the benchmarks' tables and export's verification table."""

from __future__ import annotations


def format_table(rows: list[tuple[str, ...]], markdown: bool = True) -> str:
    """rows[0] is the header. Markdown (`| a | b |`, left-aligned), or plain columns: the first
    left-aligned and the others right-aligned (numbers), two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if markdown:
        lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    else:
        lines = [
            "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
