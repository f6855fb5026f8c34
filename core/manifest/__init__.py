"""Generation manifests: read (CSV/Parquet) -> validate (per-row problems) -> usable rows."""

from .read import read_manifest, read_table
from .schema import COLUMNS, REQUIRED
from .validate import ERROR, WARNING, Problem, Row, Validation, validate

__all__ = ["COLUMNS", "ERROR", "REQUIRED", "WARNING", "Problem", "Row", "Validation", "read_manifest",
           "read_table", "validate"]
