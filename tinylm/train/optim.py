"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import torch

from tinylm.config import OptimConfig
from tinylm.errors import InputError

SCHEDULES = ("cosine", "wsd", "constant")


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name != "adamw":
        raise InputError(f"optim.name={cfg.name!r} is not an optimizer; use adamw")
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"optim.schedule={cfg.schedule!r} is not a schedule; use one of {', '.join(SCHEDULES)}")
    groups = model.optimizer_groups(cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the schedule.

    cosine: half-cosine from lr to min_lr_ratio * lr over the remaining steps;
    wsd: constant, then linear decay to min_lr_ratio * lr over the last decay_fraction of steps;
    constant: lr after warmup.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_steps = max(1, round(cfg.decay_fraction * total_steps))
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return cfg.lr
    return cfg.lr + (floor - cfg.lr) * min(1.0, (step - decay_start + 1) / decay_steps)
