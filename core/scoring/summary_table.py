"""The terminal view of summary.json: one rich table, unavailable metrics with their reasons."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table


def _fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def metric_lines(summary: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, n, note) per metric: shared by the terminal table and the HTML report."""
    lines = []
    for name, m in summary["metrics"].items():
        if not m.get("available"):
            lines.append((name, "unavailable", "-", m.get("reason", "")))
        elif name.startswith("facesim"):
            lines.append((name, f"{_fmt(m['mean_strict'])} strict / {_fmt(m['mean_detected'])} detected-only",
                          f"{m['n']} ({m['n_no_face']} no face)",
                          f"match rate {_fmt(m.get('match_rate_strict'), 3)}; {m.get('scale', '')}"))
        elif name == "fid":
            lines.append((name, _fmt(m["value"], 2), f"{m['n_outputs']} vs {m['n_references']}", m["note"]))
        elif name == "pose_light":
            note = f"{m['n_no_fit']} rows without a 3D fit"
            if m.get("n_against_request"):
                note += f"; {m['n_against_request']} against the pose/light asked for"
            lines.append(("pose_rmse_deg", _fmt(m["pose_rmse_deg"], 2), str(m["n"]), note))
            lines.append(("light_rmse", _fmt(m["light_rmse"]), str(m["n"]), "RMSE of norm-normalised SH; " + note))
        else:
            lines.append((name, _fmt(m["mean"], 2 if name == "clip_t" else 4), str(m["n"]), m.get("scale", "")))
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
