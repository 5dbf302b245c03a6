"""Model families, built from a ModelConfig by `build_model`."""

from __future__ import annotations

from tinylm.config import ModelConfig

FAMILIES = ("gpt", "mlstm", "bert")


def build_model(cfg: ModelConfig):
    if cfg.family == "gpt":
        from tinylm.models.gpt import GPT

        return GPT(cfg)
    if cfg.family == "mlstm":
        from tinylm.models.mlstm import MLSTM

        return MLSTM(cfg)
    if cfg.family == "bert":
        from tinylm.models.bert import BERT

        return BERT(cfg)
    raise ValueError(f"model.family={cfg.family!r} is not a model family; use one of {', '.join(FAMILIES)}")
