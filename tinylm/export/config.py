"""Typed options of `python -m tinylm.export` (composed by conf/export.yaml on top of `ExportConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class ExportConfig:
    ckpt: str = MISSING  # a run directory (its newest checkpoint), a checkpoints/step_* or a milestones/chck_*M folder
    out: Optional[str] = None  # the HF folder to write; default <run dir>/hf/
    dtype: str = "float32"  # float32 | bfloat16 | float16: the stored weights
    check: bool = True  # load the folder back through transformers and compare ids and logits
    overwrite: bool = False  # replace a non-empty `out`


def register_export_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="export_schema", node=ExportConfig)
