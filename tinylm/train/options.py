"""Checks of the objective options that combine with the objectives (one `error:` line each):
multi-token prediction (tinylm/train/mtp.py), loss-based reweighting (tinylm/train/reweight.py) and
latent bootstrapping (tinylm/train/bootstrap.py)."""

from __future__ import annotations

from tinylm.config import ObjectiveConfig
from tinylm.errors import InputError
from tinylm.train.reweight import REWEIGHTS

BOOTSTRAP_LOSSES = ("smooth_l1", "mse")


def check_options(cfg: ObjectiveConfig) -> None:
    """The options that combine with the objectives: multi-token prediction, reweighting, bootstrap."""
    if cfg.mtp_heads < 1:
        raise InputError(f"objective.mtp_heads={cfg.mtp_heads} must be >= 1 (1: next token only)")
    if cfg.mtp_heads > 1 and cfg.name not in ("clm", "distill", "hybrid"):
        raise InputError(f"objective.mtp_heads={cfg.mtp_heads} predicts future tokens causally; use it with objective=clm, "
                         f"distill or hybrid (not {cfg.name}), or set objective.mtp_heads=1")
    if cfg.mtp_heads > 1 and cfg.name == "hybrid" and cfg.causal_share == 0:
        raise InputError("objective.mtp_heads applies to hybrid's causal rows; objective.causal_share=0 has none")
    if cfg.mtp_weight < 0:
        raise InputError(f"objective.mtp_weight={cfg.mtp_weight} must be >= 0")
    if cfg.reweight not in REWEIGHTS:
        raise InputError(f"objective.reweight={cfg.reweight!r} is not a reweighting; use one of {', '.join(REWEIGHTS)}")
    if cfg.reweight_temperature <= 0:
        raise InputError(f"objective.reweight_temperature={cfg.reweight_temperature} must be > 0")
    if cfg.reweight_clip < 1:
        raise InputError(f"objective.reweight_clip={cfg.reweight_clip} must be >= 1 (the mean weight is 1)")
    if cfg.name != "bootstrap":
        return
    for key in ("ema_decay", "ema_decay_end"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise InputError(f"objective.{key}={getattr(cfg, key)} must be in [0, 1]")
    if cfg.bootstrap_loss not in BOOTSTRAP_LOSSES:
        raise InputError(f"objective.bootstrap_loss={cfg.bootstrap_loss!r} is not a loss; use one of {', '.join(BOOTSTRAP_LOSSES)}")
    if cfg.bootstrap_mlm_weight < 0:
        raise InputError(f"objective.bootstrap_mlm_weight={cfg.bootstrap_mlm_weight} must be >= 0")
    if not cfg.bootstrap_layers:
        raise InputError("objective.bootstrap_layers is empty; name the teacher layers to predict, e.g. [-1] (the last)")
    if cfg.adaptive or cfg.teachers:
        raise InputError("objective=bootstrap takes neither objective.adaptive nor objective.teachers; drop them")
