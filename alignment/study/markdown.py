"""The one Markdown table writer every page, the CLI and the notebook use: columns in first-seen order
unless given, floats as %.3f, None as "–", pipes escaped and newlines shown as ⏎."""
from __future__ import annotations


def md_cell(x) -> str:
    """One table cell: None (not defined for this row, e.g. KL of the human row) as "–", floats as %.3f."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x).replace("|", "\\|").replace("\n", "⏎")


def markdown_table(rows: list[dict], cols: list[str] | None = None) -> str:
    """`rows` as a Markdown table: columns in first-seen order unless given; a missing key is an empty cell.
    E.g. [{"a": 1, "b": None}] -> "| a | b |\\n|---|---|\\n| 1 | – |"."""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(md_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])
