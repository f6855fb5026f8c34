"""Manifest schemas, documentation and example manifests (see README.md here), and the offline
demo's inputs (demo.py: shipped photos, a manifest, masks) that `fmu demo-inputs` writes."""
