"""Typed options of `python -m tinylm.package` (composed by conf/package.yaml on top of `PackageConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class PackageConfig:
    run: str = MISSING  # the run directory (its newest checkpoint is the final model; milestones/ beside it)
    out: Optional[str] = None  # the submission folder to write; default <run>/babylm_submission/
    eval_dir: Optional[str] = None  # evaluation results to include (results.json, predictions.json); default <run>/eval/
    repo_id: Optional[str] = None  # Hub repository named in the model card and as push_to_hub.py's example
    dtype: str = "float32"  # float32 | bfloat16 | float16: the stored weights of every export
    check: bool = True  # reload every export through transformers and compare ids and logits with the native model
    overwrite: bool = False  # replace a non-empty `out`


def register_package_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="package_schema", node=PackageConfig)
