"""The terminal view of summary.json: one rich table, unavailable metrics with their reasons."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from .registry import mean_lines, owner


def metric_lines(summary: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, n, note) per summary entry, as its metric formats it (registry.Metric.lines):
    shared by the terminal table and the HTML report."""
    lines = []
    for name, m in summary["metrics"].items():
        if not m.get("available"):
            lines.append((name, "unavailable", "-", m.get("reason", "")))
            continue
        metric = owner(name)
        lines += metric.summary_lines(name, m) if metric is not None else mean_lines()(name, m)
    return lines


def print_summary(console, summary: dict) -> None:
    """The metrics as a table that fits 80 columns: a note (an unavailable metric's reason, a scale)
    becomes a reference `(N)` and is printed in full once below the table (metrics sharing a reason
    share its number)."""
    table = Table(title=f"fmu score: {summary['n_ok']}/{summary['n_requested']} rows fully scored",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    for col in ("metric", "value", "n", "note"):
        table.add_column(col, overflow="fold")
    notes: dict[str, int] = {}
    for name, value, n, note in metric_lines(summary):
        if note:
            note = f"({notes.setdefault(note, len(notes) + 1)})"
        table.add_row(escape(name), escape(value), escape(n), escape(note),
                      style="yellow" if value == "unavailable" else None)
    console.print(table)
    for note, number in notes.items():
        console.print(f"({number}) {escape(note)}", highlight=False)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary["status_counts"].items()))
    console.print(f"rows by status: {counts}")
    for f in summary["failures"][:20]:
        console.print(f"  [red]{f['status']}[/red] {escape(str(f['id']))}_{f['k']}: {escape(f['error'])}",
                      highlight=False)
    if len(summary["failures"]) > 20:
        console.print(f"  ... {len(summary['failures']) - 20} more in summary.json")
