"""Results table: shards appended per batch, merged into one results.parquet.

Each finished batch writes `DIR/.shards/<n>.parquet` atomically, so a crash loses at most the
batch in flight; the merge keeps the newest record per (id, k). Resume = read what is done.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import polars as pl

from ..images import atomic_write_bytes

KEY = ["id", "k", "row"]  # row = manifest row number: duplicate ids stay distinct records
SCHEMA = {
    "id": pl.String, "k": pl.Int64, "row": pl.Int64, "status": pl.String, "error": pl.String, "seed": pl.Int64,
    "prompt": pl.String, "reference": pl.String, "target": pl.String, "image": pl.String,
    "condition": pl.String, "id_similarity": pl.Float64, "id_similarity_reason": pl.String,
    "pose_error_deg": pl.Float64, "light_error": pl.Float64, "consistency_reason": pl.String,
    "steps": pl.Int64, "guidance_scale": pl.Float64, "id_scale": pl.Float64, "width": pl.Int64,
    "height": pl.Int64, "batch_seconds": pl.Float64, "analysis_seconds": pl.Float64,
    "finished_at": pl.Float64, "worker": pl.String,
}


def _frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in SCHEMA} for r in records], schema=SCHEMA)


def _write_parquet(path: Path, df: pl.DataFrame) -> None:
    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


class ResultStore:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.shards = self.out_dir / ".shards"
        self.final = self.out_dir / "results.parquet"

    def append(self, records: list[dict]) -> None:
        if records:
            _write_parquet(self.shards / f"{uuid.uuid4().hex}.parquet", _frame(records))

    def _all(self) -> pl.DataFrame:
        frames = []
        if self.final.exists():
            frames.append(pl.read_parquet(self.final).select(list(SCHEMA)).cast(SCHEMA))
        if self.shards.exists():
            frames.extend(pl.read_parquet(p).cast(SCHEMA) for p in sorted(self.shards.glob("*.parquet")))
        if not frames:
            return _frame([])
        return pl.concat(frames, how="vertical")

    def latest(self) -> pl.DataFrame:
        df = self._all()
        return (df.with_row_index("_order").sort("_order")
                  .unique(subset=KEY, keep="last", maintain_order=True).drop("_order"))

    def done_keys(self) -> set[tuple[str, int, int]]:
        """(id, k, row) whose image is ok and still on disk: resume skips exactly these."""
        df = self.latest().filter(pl.col("status") == "ok")
        done = set()
        for rid, k, row, image in df.select("id", "k", "row", "image").iter_rows():
            if image and (self.out_dir / image).is_file():
                done.add((rid, k, row))
        return done

    def merge(self, order: list[tuple[str, int, int]]) -> pl.DataFrame:
        """Keep exactly the records of this run's plan (in plan order): stale ones from an
        edited manifest do not linger."""
        rank = pl.DataFrame({"id": [o[0] for o in order], "k": [o[1] for o in order],
                             "row": [o[2] for o in order], "_rank": list(range(len(order)))},
                            schema={"id": pl.String, "k": pl.Int64, "row": pl.Int64, "_rank": pl.Int64})
        df = self.latest().join(rank, on=KEY, how="inner").sort("_rank").drop("_rank")
        _write_parquet(self.final, df)
        for p in self.shards.glob("*.parquet") if self.shards.exists() else []:
            p.unlink(missing_ok=True)
        return df
