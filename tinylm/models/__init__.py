"""Model families, built from a ModelConfig by `build_model`."""

from __future__ import annotations

from tinylm.config import ModelConfig

FAMILIES = ("gpt",)


def build_model(cfg: ModelConfig):
    if cfg.family == "gpt":
        from tinylm.models.gpt import GPT

        return GPT(cfg)
    raise ValueError(f"model.family={cfg.family!r} is not a model family; use one of {', '.join(FAMILIES)}")
