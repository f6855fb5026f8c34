"""Manifest schemas, documentation and example manifests (see README.md here)."""
