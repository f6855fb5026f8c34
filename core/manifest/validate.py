"""Validate a manifest row by row: every problem is listed, no problem stops the others.

Checks run as polars expressions over whole columns (fast on large manifests); file checks run
once per distinct path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from PIL import Image, UnidentifiedImageError

from .schema import BOUNDS, COLUMNS, ID_PATTERN, OVERRIDES

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


@dataclass
class Row:
    index: int
    id: str
    reference: Path
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    num_images: int = 1
    target: Path | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class Validation:
    rows: list[Row]                  # usable rows (warnings allowed)
    problems: list[Problem]
    total: int
    ids: list[str] = field(default_factory=list)   # id of every manifest row, in order

    def errors_by_row(self) -> dict[int, list[Problem]]:
        out: dict[int, list[Problem]] = {}
        for p in self.problems:
            if p.level == ERROR:
                out.setdefault(p.row, []).append(p)
        return out

    @property
    def ok(self) -> bool:
        return not any(p.level == ERROR for p in self.problems)


def _cast_column(df: pl.DataFrame, name: str) -> tuple[pl.Series, pl.Series]:
    """(typed values, mask of cells present but not convertible)."""
    dtype = COLUMNS[name][0]
    if name not in df.columns:
        return pl.Series(name, [None] * df.height, dtype=dtype), pl.Series([False] * df.height)
    raw = df[name]
    if raw.dtype == pl.String:
        raw = raw.str.strip_chars()
        raw = raw.replace("", None)
    typed = raw.cast(dtype, strict=False)
    if dtype in (pl.Float64, pl.Int64) and raw.dtype.is_float():
        bad_float = raw.is_nan() | raw.is_infinite()
        if dtype == pl.Int64:
            bad_float = bad_float | (raw != raw.round(0))
        typed = pl.Series(name, [None if b else v for v, b in zip(typed, bad_float.fill_null(False))],
                          dtype=dtype)
    elif dtype == pl.Float64 and raw.dtype == pl.String:
        typed = typed.set(typed.is_nan() | typed.is_infinite(), None)
    bad = raw.is_not_null() & typed.is_null()
    return typed.alias(name), bad


def _is_url(value: str) -> bool:
    return "://" in value[:16]


def _check_image_file(path: Path) -> tuple[str, str] | None:
    """Cheap header check (no pixel decode): (kind, message) or None when it looks fine."""
    if not path.exists():
        return "missing_file", f"file not found: {path}"
    if not path.is_file():
        return "not_a_file", f"not a regular file: {path}"
    try:
        if path.stat().st_size == 0:
            return "empty_file", f"file is empty: {path}"
        with Image.open(path) as img:
            img.size  # noqa: B018  (parses the header)
    except UnidentifiedImageError:
        return "not_an_image", f"not a readable image: {path}"
    except PermissionError:
        return "unreadable_file", f"permission denied: {path}"
    except (OSError, ValueError, SyntaxError) as exc:
        return "corrupt_image", f"corrupt image {path}: {exc}"
    return None


def validate(df: pl.DataFrame, base_dir: Path, *, count_tokens: Callable[[str], int] | None = None,
             token_limit: int = 77, check_files: bool = True) -> Validation:
    n = df.height
    problems: list[Problem] = []
    typed = {}
    for name in COLUMNS:
        values, bad = _cast_column(df, name)
        typed[name] = values
        for i in bad.arg_true().to_list():
            raw = df[name][i]
            problems.append(Problem(i, "", name, ERROR, "wrong_type",
                                    f"{name}={raw!r} is not a valid {COLUMNS[name][0]}"))

    ids = typed["id"]
    default_ids = pl.Series([f"row{i:06d}" for i in range(n)])
    ids = ids.fill_null(default_ids) if ids.null_count() else ids
    id_list = ids.to_list()
    for p in problems:
        p.id = id_list[p.row]

    def add(mask: pl.Series, column: str, kind: str, message: Callable[[int], str],
            level: str = ERROR) -> None:
        for i in mask.fill_null(False).arg_true().to_list():
            problems.append(Problem(i, id_list[i], column, level, kind, message(i)))

    add(~ids.str.contains(ID_PATTERN) | ids.str.contains(r"\.\."), "id", "unsafe_id",
        lambda i: f"id {id_list[i]!r} must be 1-128 letters, digits, '.', '_' or '-' "
                  "(no path separators or '..')")
    first_seen: dict[str, int] = {}
    for i, value in enumerate(id_list):
        if value in first_seen:
            problems.append(Problem(i, value, "id", ERROR, "duplicate_id",
                                    f"id {value!r} already used by row {first_seen[value]}"))
        else:
            first_seen[value] = i

    prompts = typed["prompt"]
    add(prompts.is_null() | (prompts.str.strip_chars() == ""), "prompt", "empty_prompt",
        lambda i: "prompt is empty")
    if count_tokens is not None:
        for i, text in enumerate(prompts.to_list()):
            if text and count_tokens(text) > token_limit:
                problems.append(Problem(i, id_list[i], "prompt", WARNING, "prompt_truncated",
                                        f"prompt has {count_tokens(text)} tokens; the text encoder "
                                        f"keeps the first {token_limit} (the rest is truncated)"))

    for name, (lo, hi) in BOUNDS.items():
        col = typed[name]
        add((col < lo) | (col > hi), name, "out_of_range",
            lambda i, name=name, lo=lo, hi=hi: f"{name}={typed[name][i]} outside [{lo}, {hi}]")
    for name in ("width", "height"):
        add(typed[name] % 8 != 0, name, "out_of_range",
            lambda i, name=name: f"{name}={typed[name][i]} must be a multiple of 8")

    refs, targets = typed["reference"], typed["target"]
    add(refs.is_null(), "reference", "missing_reference", lambda i: "reference is empty")
    file_cache: dict[Path, tuple[str, str] | None] = {}

    def resolve(column: str, values: pl.Series) -> list[Path | None]:
        paths: list[Path | None] = []
        for i, value in enumerate(values.to_list()):
            if value is None:
                paths.append(None)
                continue
            if _is_url(value):
                problems.append(Problem(i, id_list[i], column, ERROR, "url_not_supported",
                                        f"{column} {value!r} is a URL; download it and give a path"))
                paths.append(None)
                continue
            path = (base_dir / value) if not Path(value).is_absolute() else Path(value)
            paths.append(path)
            if check_files:
                if path not in file_cache:
                    file_cache[path] = _check_image_file(path)
                found = file_cache[path]
                if found:
                    problems.append(Problem(i, id_list[i], column, ERROR, found[0],
                                            f"{column}: {found[1]}"))
        return paths

    ref_paths = resolve("reference", refs)
    target_paths = resolve("target", targets)

    bad_rows = {p.row for p in problems if p.level == ERROR}
    rows = []
    columns = {name: typed[name].to_list() for name in COLUMNS}
    for i in range(n):
        if i in bad_rows:
            continue
        overrides = {k: columns[k][i] for k in OVERRIDES if columns[k][i] is not None}
        rows.append(Row(index=i, id=id_list[i], reference=ref_paths[i], prompt=columns["prompt"][i],
                        negative_prompt=columns["negative_prompt"][i], seed=columns["seed"][i],
                        num_images=columns["num_images"][i] or 1, target=target_paths[i],
                        overrides=overrides))
    problems.sort(key=lambda p: (p.row, p.level != ERROR))
    return Validation(rows=rows, problems=problems, total=n, ids=id_list)
