"""Results table: shards appended per batch, merged into one results.parquet.

Each finished batch writes `DIR/.shards/<time>-<n>.parquet` atomically, so a crash loses at most the
batch in flight; the merge keeps the newest record per (id, k). Resume = read what is done.

A finished image stays done while its row's inputs match the plan (`INPUTS`) and its reference
and target files still hold the bytes it was made from: each record keeps a file's stamp
(size:mtime) and sha256; a file whose stamp moved (copied, touched, replaced) is hashed again and
the image is redone only when the bytes differ. A finished image is matched by its id and k, not by
its row number, so inserting or removing a manifest row does not redo the rows after it.

Shards are merged only under the output folder's lock (core/out_lock.py), and a merge deletes only
the shards it read.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import polars as pl

from ..digests import file_digest, file_stamp
from ..errors import UsageError, first_line
from ..manifest.people_layout import SEPARATOR
from ..tables import write_table
from .writers.files import FilesWriter

KEY = ["id", "k", "row"]  # row = manifest row number: duplicate ids stay distinct records
MATCH = ["id", "k"]       # what resume matches a finished image by (with INPUTS): not the row number
# what an image was made from: a finished image counts as done only while these still match the
# plan, so a row edited in place (new prompt, seed, reference, setting) is generated again
INPUTS = ["reference", "target", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "id_scale",
          "width", "height", "frame", "yaw", "pitch", "roll", "expression", "light", "layout"]
# (path column, its stamp, its sha256) for the files an image was made from
SOURCES = [("reference", "reference_stamp", "reference_sha256"), ("target", "target_stamp", "target_sha256"),
           ("expression", "expression_stamp", "expression_sha256")]
NOT_A_FILE = "neutral"  # the one `expression` value that names no file
SCHEMA = {
    "id": pl.String, "k": pl.Int64, "row": pl.Int64, "status": pl.String, "error": pl.String, "seed": pl.Int64,
    "prompt": pl.String, "negative_prompt": pl.String, "reference": pl.String, "target": pl.String, "image": pl.String,
    "condition": pl.String, "id_similarity": pl.Float64, "id_similarity_reason": pl.String,
    "pose_error_deg": pl.Float64, "light_error": pl.Float64, "consistency_reason": pl.String,
    "steps": pl.Int64, "guidance_scale": pl.Float64, "id_scale": pl.Float64, "width": pl.Int64,
    "height": pl.Int64, "frame": pl.String, "frame_left": pl.Int64, "frame_top": pl.Int64,
    "frame_side": pl.Int64, "batch_seconds": pl.Float64, "analysis_seconds": pl.Float64,
    "finished_at": pl.Float64, "worker": pl.String, "reference_stamp": pl.String,
    "reference_sha256": pl.String, "target_stamp": pl.String, "target_sha256": pl.String,
    # the 3D controls as the manifest gave them (null: not asked for; paths resolved like reference's)
    "yaw": pl.Float64, "pitch": pl.Float64, "roll": pl.Float64, "expression": pl.String, "light": pl.String,
    "expression_stamp": pl.String, "expression_sha256": pl.String,
    # several people (core/runner/people_row.py): paths, stamps and digests above are `|`-joined per person;
    # the boxes, per-person values in reference order, the worst identity, each person's frame
    "layout": pl.String, "people_id_similarity": pl.List(pl.Float64), "id_similarity_min": pl.Float64,
    "people_pose_error_deg": pl.List(pl.Float64), "people_light_error": pl.List(pl.Float64),
    "people_frames": pl.List(pl.List(pl.Int64)),
    # quality gating (gating.py): the attempts made, their seeds and scores, the one kept, accepted
    "attempts": pl.Int64, "attempt_seeds": pl.List(pl.Int64), "attempt_id_similarity": pl.List(pl.Float64),
    "attempt_pose_error_deg": pl.List(pl.Float64), "attempt_light_error": pl.List(pl.Float64),
    "kept_seed": pl.Int64, "accepted": pl.Boolean, "rejection_reason": pl.String,
    "rejected_images": pl.List(pl.String),
}


def _frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in SCHEMA} for r in records], schema=SCHEMA)


class ResultStore:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.shards = self.out_dir / ".shards"
        self.final = self.out_dir / "results.parquet"

    def append(self, records: list[dict]) -> None:
        if records:
            # named by the time written, so the sorted shards are in write order and the newest
            # record of an image wins the merge (a re-run's ok over a killed run's failure)
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            write_table(self.shards / name, _frame(records))

    def _all(self) -> tuple[pl.DataFrame, list[Path]]:
        """Every record (results.parquet, then the shards in write order) and the shards read."""
        frames = []
        shards = sorted(self.shards.glob("*.parquet")) if self.shards.exists() else []
        paths = ([self.final] if self.final.exists() else []) + shards
        for path in paths:
            df = _read_table(path)
            # tables from an older fmu lack newer columns: null, so their rows are simply redone
            missing = [pl.lit(None, dtype).alias(c) for c, dtype in SCHEMA.items() if c not in df.columns]
            frames.append(df.with_columns(missing).select(list(SCHEMA)).cast(SCHEMA))
        if not frames:
            return _frame([]), shards
        return pl.concat(frames, how="vertical"), shards

    def latest(self) -> pl.DataFrame:
        return self._latest()[0]

    def _latest(self) -> tuple[pl.DataFrame, list[Path]]:
        df, shards = self._all()
        return (df.with_row_index("_order").sort("_order")
                  .unique(subset=KEY, keep="last", maintain_order=True).drop("_order")), shards

    def done(self, present: set[str] | None = None) -> pl.DataFrame:
        """The records of the images that are ok and that the output still holds (every column).
        `present`: the locations the writer says it holds (`Writer.done()`; None: the files
        writer's). Columnar: no per-row objects."""
        ok = self.latest().filter(pl.col("status") == "ok")
        if present is None:
            present = FilesWriter(self.out_dir).done()
        held = pl.Series("image", sorted(present), dtype=pl.String)
        return ok.join(held.to_frame(), on="image", how="semi")

    def todo(self, plan: pl.DataFrame, present: set[str] | None = None) -> pl.DataFrame:
        return self.resume(plan, present)[0]

    def resume(self, plan: pl.DataFrame, present: set[str] | None = None) -> tuple[pl.DataFrame, list[dict]]:
        """(the plan rows still to generate, the records of finished images whose row moved).

        A plan row is done when a finished image has its id, k and INPUTS, and its source files
        still hold the same bytes. The row number is not part of the match: a row inserted or
        removed above it moves it, and its image (named by id and k) is still the one asked for.
        Rows without an id are named by their row number (`row000012`), so for them it still
        counts. A moved image's record is returned under its new row number, to be appended."""
        cast = [pl.col(c).cast(SCHEMA[c]) for c in INPUTS]
        plan = plan.with_row_index("_plan").with_columns(cast)
        done = self.done(present).rename({"row": "_done_row"})
        matched = plan.select("_plan", *KEY, *INPUTS).join(done, on=[*MATCH, *INPUTS], how="inner", nulls_equal=True)
        kept = matched.filter(_sources_unchanged(matched)).unique("_plan", keep="last", maintain_order=True)
        moved = kept.filter(pl.col("row") != pl.col("_done_row")).select(list(SCHEMA)).to_dicts()
        todo = plan.join(kept.select("_plan"), on="_plan", how="anti").sort("_plan").drop("_plan")
        return todo, moved

    def merge(self, order: pl.DataFrame) -> pl.DataFrame:
        """Keep exactly the records of this run's plan, in plan order (`order`: id, k, row):
        stale ones from an edited manifest do not linger."""
        rank = order.select(KEY).with_row_index("_rank")
        latest, read = self._latest()
        df = latest.join(rank, on=KEY, how="inner").sort("_rank").drop("_rank")
        write_table(self.final, df)
        for p in read:  # only the shards merged: one written since (by anyone) waits for the next merge
            p.unlink(missing_ok=True)
        return df


def _read_table(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001  polars raises several types for a damaged file
        raise UsageError(f"{path} is damaged ({first_line(exc)}); move it out of the output folder and "
                         "re-run: the rows it recorded are generated again") from None


def _sources_unchanged(matched: pl.DataFrame) -> pl.Series:
    """Per matched row: do its reference and target hold the bytes recorded? Stats each distinct
    file once; hashes only files whose stamp differs from a recorded one."""
    keep = pl.Series([True] * matched.height, dtype=pl.Boolean)
    for path_col, stamp_col, digest_col in SOURCES:
        paths = matched[path_col]
        paths = paths.set((paths == NOT_A_FILE).fill_null(False), None)
        stamps = {p: _each(file_stamp, p) for p in paths.drop_nulls().unique().to_list()}
        current = paths.replace_strict(stamps, default=None, return_dtype=pl.String)
        moved = paths.is_not_null() & (current.is_null() | (current != matched[stamp_col]).fill_null(True))
        digests = {}
        for p in paths.filter(moved).unique().to_list():
            try:
                digests[p] = _each(file_digest, p)
            except OSError:
                digests[p] = None  # gone or unreadable: not the bytes recorded
        now = paths.replace_strict(digests, default=None, return_dtype=pl.String)
        same = ~moved | (now == matched[digest_col]).fill_null(False)
        keep = keep & same
    return keep


def _each(fn, paths: str) -> str | None:
    """`fn` of a path, or of each part of a row of several people's `|`-joined paths, joined the
    same way (an empty part stays empty); None when a file is gone."""
    if SEPARATOR not in paths:
        return fn(paths)
    values = [fn(p) if p else "" for p in paths.split(SEPARATOR)]
    return None if any(v is None for v in values) else SEPARATOR.join(values)
