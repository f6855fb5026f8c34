"""Several people in one image: the `reference` / `target` lists and the `layout` of a row.

A row names up to `MAX_PEOPLE` people by separating their reference paths with `|`, left to right
(`a.png|b.png`); `target` gives one path per person the same way (an empty part: that person has
none). `layout` places each person in a box of the output, in output-relative coordinates
`x0,y0,x1,y1` (0..1, left/top to right/bottom), boxes separated by `|` in the order of the
references; `auto` (or no layout) puts the people side by side in equal full-height columns.

People are numbered from 1 in messages (`reference[2]` is the second path). A row with one
reference and no layout (or `auto`) is an ordinary one-person row; one reference with a box is a
person placed in that box. The checks here are pure functions of the cell values (no files are
read); validate.py runs the per-file checks on every person's path and turns these findings into
row problems.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..boxes import Box

SEPARATOR = "|"
MAX_PEOPLE = 4
AUTO = "auto"
# boxes may share at most this fraction of the smaller box's area: beyond it two identities would
# act on one face (the identity masks add up where boxes overlap)
MAX_OVERLAP = 0.25
# a box narrower or shorter than this fraction of the image leaves too little room for a face
MIN_BOX_SIDE = 0.1


@dataclass(frozen=True)
class Person:
    reference: Path
    target: Path | None
    box: Box                 # x0, y0, x1, y1 as fractions of the output's width and height


class LayoutError(ValueError):
    """A `layout` cell that cannot be used; `kind` is the problem's kind in validation."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def split_paths(value: str | None) -> list[str]:
    """The parts of a `reference` / `target` cell, stripped; [] for an empty cell."""
    if value is None:
        return []
    return [part.strip() for part in str(value).split(SEPARATOR)]


def count_people(value: str | None) -> int:
    return 0 if value is None else str(value).count(SEPARATOR) + 1


def is_several(value: str | None) -> bool:
    return value is not None and SEPARATOR in str(value)


def label(column: str, index: int) -> str:
    """How messages name one person's cell: `reference[2]` for the second person (1-based)."""
    return f"{column}[{index + 1}]"


def auto_boxes(n: int) -> list[Box]:
    """Side by side, left to right, in equal full-height columns."""
    return [(i / n, 0.0, (i + 1) / n, 1.0) for i in range(n)]


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_layout(value: str | None, n: int) -> list[Box]:
    """The boxes of `n` people from a `layout` cell (None / `auto`: side by side).
    Raises LayoutError (kind `bad_layout`, `layout_mismatch`, `box_outside`, `box_too_small`,
    `box_overlap`) with a message naming the box."""
    if value is None or value.strip().lower() in ("", AUTO):
        return auto_boxes(n)
    parts = [p.strip() for p in value.split(SEPARATOR)]
    boxes: list[Box] = []
    for i, part in enumerate(parts):
        numbers = [t.strip() for t in part.split(",")]
        try:
            if len(numbers) != 4:
                raise ValueError(part)
            x0, y0, x1, y1 = (_number(t) for t in numbers)
        except ValueError:
            raise LayoutError("bad_layout", f"layout box {i + 1} {part!r} is not x0,y0,x1,y1 "
                                            "(four numbers in 0..1)") from None
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise LayoutError("box_outside", f"layout box {i + 1} ({part}) is not inside the image: "
                                             "need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if min(x1 - x0, y1 - y0) < MIN_BOX_SIDE:
            raise LayoutError("box_too_small", f"layout box {i + 1} ({part}) is narrower or shorter than "
                                               f"{MIN_BOX_SIDE:g} of the image")
        boxes.append((x0, y0, x1, y1))
    if len(boxes) != n:
        raise LayoutError("layout_mismatch", f"layout has {len(boxes)} box(es) for {n} "
                                             f"{'person' if n == 1 else 'people'}")
    for i in range(n):
        for j in range(i + 1, n):
            share = overlap(boxes[i], boxes[j])
            if share > MAX_OVERLAP:
                raise LayoutError("box_overlap", f"layout boxes {i + 1} and {j + 1} overlap by {share:.0%} of "
                                                 f"the smaller one (at most {MAX_OVERLAP:.0%})")
    return boxes


def overlap(a: Box, b: Box) -> float:
    """The area two boxes share, as a fraction of the smaller box's area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def format_layout(boxes: list[Box]) -> str:
    """The canonical text of boxes (what the usable-rows table and results.parquet keep)."""
    return SEPARATOR.join(",".join(f"{v:.6g}" for v in box) for box in boxes)


def canonical_layout(reference: str | None, layout: str | None) -> str | None:
    """The layout a row is generated with: None for an ordinary one-person row (one reference,
    no layout or `auto`), else the boxes as `format_layout` writes them. Raises LayoutError."""
    n = len(split_paths(reference))
    if n <= 1 and (layout is None or layout.strip().lower() in ("", AUTO)):
        return None
    return format_layout(parse_layout(layout, n))


def check_row(reference: str | None, target: str | None, layout: str | None
              ) -> tuple[str | None, list[tuple[str, str, str]]]:
    """(canonical layout, problems) of one row's people cells, problems as (column, kind, message):
    too many people, an empty person, a target count that disagrees, an unusable layout."""
    problems: list[tuple[str, str, str]] = []
    count = count_people(reference)
    if count > MAX_PEOPLE:  # counted before splitting: one message, however many `|` the cell holds
        return None, [("reference", "too_many_people", f"{count} people in reference; at most {MAX_PEOPLE} per image")]
    refs = split_paths(reference)
    if len(refs) > 1:
        for i, part in enumerate(refs):
            if not part:
                problems.append(("reference", "missing_reference", f"{label('reference', i)} is empty"))
    if target is not None and (len(refs) > 1 or is_several(target)):
        targets = split_paths(target)
        if len(targets) != len(refs):
            problems.append(("target", "people_mismatch",
                             f"target has {len(targets)} path(s) for {len(refs)} people in reference "
                             "(give one target per person, an empty part for none)"))
    try:
        return canonical_layout(reference, layout), problems
    except LayoutError as exc:
        return None, problems + [("layout", exc.kind, str(exc))]


def check_paths(value: str, column: str, check_one: Callable[[str], tuple[str | None, tuple | None]]
                ) -> tuple[str | None, tuple[str, str] | None]:
    """Each person's path of a `|` cell through `check_one` (the single-path check: value ->
    (resolved, (kind, message) or None)); (resolved paths joined, the first problem naming its
    person). An empty part of a target is kept empty (that person has no target)."""
    if count_people(value) > MAX_PEOPLE:
        return None, None   # check_row reports it, once
    resolved = []
    for i, part in enumerate(split_paths(value)):
        if not part:
            resolved.append("")  # reported by check_row for a reference; no target for this person
            continue
        path, problem = check_one(part)
        if problem is not None:
            kind, message = problem
            prefix = f"{column}: "
            message = message[len(prefix):] if message.startswith(prefix) else message
            return None, (kind, f"{label(column, i)}: {message}")
        resolved.append(path)
    return SEPARATOR.join(resolved), None


def people_of(reference: str | Path, target: str | Path | None, layout: str | None) -> tuple[Person, ...]:
    """The people of a usable row (paths resolved, layout canonical); () for a one-person row."""
    if layout is None:
        return ()
    refs = split_paths(str(reference))
    targets = split_paths(str(target)) if target else [""] * len(refs)
    boxes = parse_layout(layout, len(refs))
    return tuple(Person(Path(r), Path(t) if t else None, box) for r, t, box in zip(refs, targets, boxes))
