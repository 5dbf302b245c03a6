"""BabyLM submission packaging: `python -m tinylm.package run=RUN_DIR out=DIR` (tinylm.package.build)."""
