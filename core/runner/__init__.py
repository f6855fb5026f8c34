"""`fmu generate`: manifest rows -> work plan -> devices / ranks -> one worker per device (face
analysis, shading conditions, denoising, atomic image writes, per-image scores) -> results.parquet.
"""
