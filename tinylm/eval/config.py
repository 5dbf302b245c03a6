"""Typed options of `python -m tinylm.eval` (composed by conf/eval.yaml on top of `EvalConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

SCORERS = ("auto", "causal", "pll", "pll_word", "mntp")


@dataclass
class EvalConfig:
    ckpt: str = MISSING  # a run directory (its newest checkpoint) or a checkpoints/step_* folder
    tasks: str = MISSING  # a folder of evaluation files (searched recursively) or one file
    out: Optional[str] = None  # where results go; default <run dir>/eval/
    # auto: from the objective the run trained with: causal (clm, distill), pll (mlm), mntp (hybrid, with
    # causal scores beside it); pll_word = PLL-word-l2r; mntp = masked next token
    scorer: str = "auto"
    batch_size: int = 64  # rows per forward pass
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (1 is fastest for tiny models on a busy CPU)
    tie_credit: float = 0.0  # credit for a tie that includes the correct candidate (0.5 = half)
    max_items: int = 0  # >0: only the first max_items items of each file (a quick look)
    max_len: int = 0  # >0: scoring and dev-perplexity window in tokens; 0 = the run's training seq_len (longest stage reached)
    dev: bool = True  # dev perplexity and bits per byte on the run's dev shard (causal models)
    dev_max_bytes: int = 1_500_000  # dev perplexity on the first dev documents up to this much text (UTF-8 bytes)
    samples: bool = True  # a few generations (causal models)
    sample_tokens: int = 32
    seed: int = 0  # sampling seed


def register_eval_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
