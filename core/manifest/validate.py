"""Validate a manifest row by row: every problem is listed, no problem stops the others.

Checks are polars expressions over whole columns and file checks run once per distinct path,
so a million-row manifest validates in seconds; Python objects are made only for problems.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import polars as pl
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..images import check_file_size, check_size
from ..shading.controls import ControlRequest, is_neutral
from ..shading.light_presets import LightError, parse_light
from . import people_layout
from .schema import BOUNDS, COLUMNS, CONTROLS, ID_PATTERN, MAX_CELL_CHARS, OVERRIDES, READ_ERROR, row_ids

ERROR, WARNING = "error", "warning"


@dataclass
class Problem:
    row: int
    id: str
    column: str
    level: str
    kind: str
    message: str

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(slots=True)
class Row:
    index: int
    id: str
    reference: Path
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    num_images: int = 1
    target: Path | None = None
    overrides: dict | None = None
    controls: ControlRequest = field(default_factory=ControlRequest)  # pose, expression, light (None: as fitted)
    layout: str | None = None        # several people (people_layout.py): their boxes; None: one person

    @property
    def people(self) -> tuple[people.Person, ...]:
        """Each person's reference, target and box; () for an ordinary one-person row."""
        return people_layout.people_of(self.reference, self.target, self.layout)


# the usable-rows table: one row per usable manifest row, typed, paths resolved (a row of several
# people keeps its `|`-separated paths and its canonical `layout`)
TABLE_COLUMNS = ["row", "id", "reference", "target", "prompt", "negative_prompt", "seed", "num_images",
                 *OVERRIDES, *CONTROLS, "layout"]


@dataclass
class Validation:
    table: pl.DataFrame              # usable rows (warnings allowed), see TABLE_COLUMNS
    problems: list[Problem]
    total: int
    id_series: pl.Series             # id of every manifest row, in order

    @property
    def rows(self) -> list[Row]:
        return rows_from_table(self.table)

    def errors_by_row(self) -> dict[int, list[Problem]]:
        out: dict[int, list[Problem]] = {}
        for p in self.problems:
            if p.level == ERROR:
                out.setdefault(p.row, []).append(p)
        return out

    @property
    def ok(self) -> bool:
        return not any(p.level == ERROR for p in self.problems)


def rows_from_table(table: pl.DataFrame) -> list[Row]:
    rows = []
    for r in table.iter_rows(named=True):
        rows.append(Row(index=r["row"], id=r["id"], reference=Path(r["reference"]), prompt=r["prompt"],
                        negative_prompt=r["negative_prompt"], seed=r["seed"], num_images=r["num_images"],
                        target=Path(r["target"]) if r["target"] else None,
                        overrides={k: r[k] for k in OVERRIDES if r[k] is not None},
                        controls=ControlRequest.from_record(r), layout=r["layout"]))
    return rows


def _drop_long_cells(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """(df with every text cell longer than its column's MAX_CELL_CHARS nulled, mask of those cells per
    column): measured by length alone, so nothing downstream parses an over-long cell."""
    masks = {}
    for name, limit in MAX_CELL_CHARS.items():
        if name not in df.columns or df[name].dtype not in (pl.String, pl.Binary):
            continue
        lengths = df[name].str.len_chars() if df[name].dtype == pl.String else df[name].bin.size()
        too_long = (lengths > limit).fill_null(False)
        if too_long.any():
            masks[name] = too_long
            df = df.with_columns(pl.when(too_long).then(None).otherwise(pl.col(name)).alias(name))
    return df, masks


def _cast_column(df: pl.DataFrame, name: str) -> tuple[pl.Series, pl.Series]:
    """(typed values, mask of cells present but not convertible)."""
    dtype = COLUMNS[name][0]
    if name not in df.columns:
        return pl.Series(name, [None] * df.height, dtype=dtype), pl.Series(name, [False] * df.height)
    raw = df[name]
    if raw.dtype.is_nested():  # a list / struct / array cell (Parquet) is never a scalar value
        return pl.Series(name, [None] * df.height, dtype=dtype), raw.is_not_null()
    if raw.dtype == pl.Binary:  # Parquet bytes: text when they are UTF-8, a wrong_type cell when not
        raw = pl.Series(name, [_utf8(v) for v in raw.to_list()], dtype=pl.String)
        bad_bytes = df[name].is_not_null() & raw.is_null()
        typed, bad = _cast_column(pl.DataFrame({name: raw}), name)
        return typed, bad | bad_bytes
    if raw.dtype == pl.String:
        raw = raw.str.strip_chars().replace("", None)
    if dtype in (pl.Float64, pl.Int64) and (raw.dtype.is_float() or raw.dtype == pl.String):
        as_float = raw.cast(pl.Float64, strict=False)
        bad_float = as_float.is_nan() | as_float.is_infinite()
        if dtype == pl.Int64:
            bad_float = bad_float | (as_float != as_float.round(0))
        # "3.0" in a CSV is the integer 3, as 3.0 in a Parquet float column is
        exact = pl.coalesce(raw.cast(dtype, strict=False), as_float.cast(dtype, strict=False))
        typed = pl.select(pl.when(bad_float.fill_null(False)).then(None).otherwise(exact)).to_series()
    else:
        typed = raw.cast(dtype, strict=False)
    bad = raw.is_not_null() & typed.is_null()
    return typed.alias(name), bad


def _utf8(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _cell(value) -> str:
    """A cell as one short line for a message: a Parquet list cell arrives as a Series."""
    text = repr(value.to_list() if isinstance(value, pl.Series) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_url(value: str) -> bool:
    return "://" in value[:16]


def _check_image_file(path: Path) -> tuple[str, str] | None:
    """Cheap header check (no pixel decode): (kind, message) or None when it looks fine."""
    if not path.exists():
        return "missing_file", f"file not found: {path}"
    if not path.is_file():
        return "not_a_file", f"not a regular file: {path}"
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty_file", f"file is empty: {path}"
        check_file_size(path, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged by check_size
            with Image.open(path) as img:
                width, height = img.size  # parses the header only
        check_size(width, height, str(path))
    except ImageError as exc:
        return exc.kind, str(exc)
    except Image.DecompressionBombError as exc:  # not an OSError: PIL refuses > 2x its own limit
        return "image_too_large", f"{path}: {exc} (possible decompression bomb)"
    except UnidentifiedImageError:
        return "not_an_image", f"not a readable image: {path}"
    except PermissionError:
        return "unreadable_file", f"permission denied: {path}"
    except (OSError, ValueError, SyntaxError) as exc:
        return "corrupt_image", f"corrupt image {path}: {exc}"
    return None


def _check_path(value: str, column: str, base_dir: Path, check_files: bool
                ) -> tuple[str | None, tuple[str, str] | None]:
    """(resolved path, (kind, message) or None) of one path cell."""
    if _is_url(value):
        return None, ("url_not_supported", f"{column} {value!r} is a URL; download it and give a path")
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    found = _check_image_file(path) if check_files else None
    return str(path), ((found[0], f"{column}: {found[1]}") if found else None)


def _check_people(typed: dict, problems: list[Problem], ids: pl.Series) -> pl.Series:
    """Rows naming several people or a layout (people_layout.py): their problems, and the canonical
    layout of every row (null for one-person rows)."""
    refs, targets, layouts = typed["reference"], typed["target"], typed["layout"]
    sep = people_layout.SEPARATOR
    several = (refs.str.contains(sep, literal=True) | targets.str.contains(sep, literal=True)
               | layouts.is_not_null()).fill_null(False)
    canonical: list[str | None] = [None] * len(refs)
    for i in several.arg_true().to_list():
        canonical[i], found = people_layout.check_row(refs[i], targets[i], layouts[i])
        problems.extend(Problem(i, ids[i], column, ERROR, kind, message) for column, kind, message in found)
    return pl.Series("layout", canonical, dtype=pl.String)


def _resolved_paths(typed: dict, problems: list[Problem], ids: pl.Series, base_dir: Path,
                    check_files: bool) -> dict[str, pl.Series]:
    """reference, target and expression resolved against `base_dir` (each distinct value checked
    once); a problem for every row whose value fails."""
    resolved = {}
    for column in ("reference", "target", "expression"):
        values = typed[column]
        mapping: dict[str, str] = {}
        failing: dict[str, tuple[str, str]] = {}
        for value in values.drop_nulls().unique().to_list():
            if column == "expression" and is_neutral(value):
                mapping[value] = "neutral"
                continue
            if column != "expression" and people_layout.is_several(value):  # several people: each path checked
                path, failure = people_layout.check_paths(value, column, partial(_check_path, column=column,
                                                                         base_dir=base_dir, check_files=check_files))
            else:
                path, failure = _check_path(value, column, base_dir, check_files)
            if path is not None:
                mapping[value] = path
            if failure is not None:
                failing[value] = failure
        resolved[column] = values.replace_strict(mapping, default=None, return_dtype=pl.String)
        if failing:
            for i in values.is_in(list(failing)).fill_null(False).arg_true().to_list():
                problems.append(Problem(i, ids[i], column, ERROR, *failing[values[i]]))
    return resolved


def _light_problems(lights: pl.Series, add) -> None:
    """A problem (bad_light, out_of_range) for every row whose light cannot be parsed."""
    bad_lights: dict[str, LightError] = {}
    for value in lights.drop_nulls().unique().to_list():
        try:
            parse_light(value)
        except LightError as exc:
            bad_lights[value] = exc
    for kind in sorted({exc.kind for exc in bad_lights.values()}):  # bad_light, out_of_range
        add(lights.is_in([v for v, exc in bad_lights.items() if exc.kind == kind]), "light", kind,
            lambda i: str(bad_lights[lights[i]]))


def _with_unread_rows(df: pl.DataFrame, problems: list[Problem], ids: pl.Series) -> list[Problem]:
    """A CSV record that could not be read (csv_rows.py): kind: line N: why. Its cells say nothing
    reliable, so that is its only problem."""
    if READ_ERROR in df.columns:
        unread = df[READ_ERROR]
        rows = set(unread.is_not_null().arg_true().to_list())
        problems = [p for p in problems if p.row not in rows]
        for i in sorted(rows):
            kind, _, message = unread[i].partition(": ")
            problems.append(Problem(i, ids[i], "", ERROR, kind, message))
    return problems


def _without_unread_cells(problems: list[Problem], long_cells: dict[str, pl.Series]) -> list[Problem]:
    """An over-long cell is not read (_drop_long_cells): reported once, not also as empty or missing."""
    if not long_cells:
        return problems
    unread_cells = {(i, name) for name, mask in long_cells.items() for i in mask.arg_true().to_list()}
    return [p for p in problems if p.kind == "cell_too_long" or (p.row, p.column) not in unread_cells]


def validate(df: pl.DataFrame, base_dir: Path, *, count_tokens: Callable[[str], int] | None = None,
             token_limit: int = 77, check_files: bool = True) -> Validation:
    n = df.height
    problems: list[Problem] = []
    index = pl.Series("row", range(n), dtype=pl.Int64)
    df, long_cells = _drop_long_cells(df)
    typed = {}
    bad_cells = {}
    for name in COLUMNS:
        typed[name], bad_cells[name] = _cast_column(df, name)

    ids = row_ids(typed["id"], n)

    def add(mask: pl.Series, column: str, kind: str, message: Callable[[int], str],
            level: str = ERROR) -> None:
        for i in mask.fill_null(False).arg_true().to_list():
            problems.append(Problem(i, ids[i], column, level, kind, message(i)))

    for name, bad in bad_cells.items():
        if name in df.columns:
            add(bad, name, "wrong_type", lambda i, name=name: f"{name}={_cell(df[name][i])} is not a "
                                                              f"valid {COLUMNS[name][0]}")
    for name, too_long in long_cells.items():
        add(too_long, name, "cell_too_long", lambda i, name=name: f"{name} holds more than "
                                                                 f"{MAX_CELL_CHARS[name]:,} characters; not read")
    add(~ids.str.contains(ID_PATTERN) | ids.str.contains(r"\.\."), "id", "unsafe_id",
        lambda i: f"id {ids[i]!r} must be 1-128 letters, digits, '.', '_' or '-' "
                  "(no path separators or '..')")
    dup = ~ids.is_first_distinct()
    if dup.any():
        first = dict(pl.DataFrame({"id": ids, "row": index}).group_by("id").agg(pl.col("row").min()).iter_rows())
        add(dup, "id", "duplicate_id", lambda i: f"id {ids[i]!r} already used by row {first[ids[i]]}")

    prompts = typed["prompt"]
    add((prompts.is_null() & ~bad_cells["prompt"]) | (prompts.str.strip_chars() == ""), "prompt", "empty_prompt",
        lambda i: "prompt is empty")
    if count_tokens is not None:
        # a CLIP token covers >= 1 character: only prompts longer than the limit can exceed it
        long_mask = prompts.str.len_chars() > token_limit - 2
        if long_mask.any():
            counts = {p: count_tokens(p) for p in prompts.filter(long_mask).unique().to_list()}
            add(long_mask & prompts.replace_strict(counts, default=0, return_dtype=pl.Int64).gt(token_limit),
                "prompt", "prompt_truncated",
                lambda i: f"prompt has {counts[prompts[i]]} tokens; the text encoder keeps the first "
                          f"{token_limit} (the rest is truncated)", level=WARNING)

    for name, (lo, hi) in BOUNDS.items():
        col = typed[name]
        add((col < lo) | (col > hi), name, "out_of_range",
            lambda i, name=name, lo=lo, hi=hi: f"{name}={typed[name][i]} outside [{lo}, {hi}]")
    for name in ("width", "height"):
        add(typed[name] % 8 != 0, name, "out_of_range",
            lambda i, name=name: f"{name}={typed[name][i]} must be a multiple of 8")

    add(typed["reference"].is_null() & ~bad_cells["reference"], "reference", "missing_reference",
        lambda i: "reference is empty")
    resolved = _resolved_paths(typed, problems, ids, base_dir, check_files)
    lights = typed["light"]
    _light_problems(lights, add)
    layouts = _check_people(typed, problems, ids)
    problems = _with_unread_rows(df, problems, ids)
    problems = _without_unread_cells(problems, long_cells)
    error_rows = sorted({p.row for p in problems if p.level == ERROR})
    usable = ~index.is_in(error_rows)
    table = pl.DataFrame({
        "row": index, "id": ids, "reference": resolved["reference"], "target": resolved["target"],
        "prompt": prompts, "negative_prompt": typed["negative_prompt"], "seed": typed["seed"],
        "num_images": typed["num_images"].fill_null(1), **{k: typed[k] for k in OVERRIDES},
        "yaw": typed["yaw"], "pitch": typed["pitch"], "roll": typed["roll"],
        "expression": resolved["expression"], "light": lights,
        "layout": layouts,
    }).filter(usable)
    problems.sort(key=lambda p: (p.row, p.level != ERROR))
    return Validation(table=table, problems=problems, total=n, id_series=ids)
