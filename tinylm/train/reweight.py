"""Loss-based sample reweighting (`objective.reweight=softmax|rank`): rows the model currently finds
hard count more in the step's loss.

Dynamic instance reweighting from the small-LM seed list: each row (sequence) r of a batch gets a
weight from its own mean token loss L_r (detached: the weights are constants of the step), and
every scored token of row r has its loss multiplied by w_r:

    loss = sum_r w_r * sum_{t in r} l_rt / N          (N: scored tokens of the batch)

so w = 1 everywhere is the plain mean cross-entropy.

- softmax: w_r proportional to exp(L_r / T) (T = objective.reweight_temperature, in nats).
- rank:    w_r proportional to exp(q_r / T), q_r = rank of L_r among the rows / (R - 1) in [0, 1]
           (scale-free: only the order of the losses matters; ties keep row order).

Then weights are scaled to mean 1 over the rows that have scored tokens, clipped at
objective.reweight_clip (no row counts more than clip x the mean) and scaled to mean 1 again (the
clip is applied once, so after the second scaling a weight can end slightly above it). Rows
without scored tokens (an mlm row where nothing was masked) take weight 0 and do not count in the
mean. The spread of the weights (max / min and std over the weighted rows) goes into metrics.

Every objective uses it on its cross-entropy terms (clm and distill: the hard next-token loss; mlm:
the masked tokens; hybrid: the causal rows and the masked rows each among themselves). Not weighted:
the distillation soft term, the extra heads of multi-token prediction, the bootstrap latent loss.
The weighted loss needs per-token losses with gradients, so with reweighting on the head and the
cross-entropy run unfused (the (tokens, V) logits exist, as for distillation), also on CUDA.
"""

from __future__ import annotations

import torch

REWEIGHTS = ("none", "softmax", "rank")


def row_weights(row_loss: torch.Tensor, valid: torch.Tensor, mode: str, temperature: float, clip: float) -> torch.Tensor:
    """(R,) weights with mean 1 over the `valid` rows (0 elsewhere) from the (R,) per-row losses."""
    loss = row_loss.detach().double()
    w = torch.zeros_like(loss)
    n = int(valid.sum())
    if n == 0:
        return w.float()
    x = loss[valid]
    if mode == "rank":
        order = torch.argsort(x, stable=True)
        ranks = torch.empty_like(x)
        ranks[order] = torch.arange(n, dtype=x.dtype, device=x.device)
        x = ranks / max(n - 1, 1)
    elif mode != "softmax":
        raise ValueError(f"reweight mode {mode!r} is not one of {', '.join(REWEIGHTS)}")
    v = torch.softmax(x / temperature, dim=0) * n  # mean 1
    v = v.clamp(max=clip)
    w[valid] = v * (n / v.sum())
    return w.float()


def reweighted(per_token: torch.Tensor, targets: torch.Tensor, ignore: int, mode: str, temperature: float, clip: float,
               stats: dict, prefix: str = "") -> torch.Tensor:
    """The weighted mean loss of (R, T) per-token losses (0 where targets == ignore), with the
    weights' spread written into stats (reweight_max_min, reweight_std)."""
    per_token = per_token.reshape(targets.shape)
    scored = targets != ignore
    counts = scored.sum(dim=1)
    valid = counts > 0
    row_loss = per_token.detach().float().sum(dim=1) / counts.clamp(min=1)
    w = row_weights(row_loss, valid, mode, temperature, clip).to(per_token.device)
    if bool(valid.any()):
        wv = w[valid]
        stats[f"{prefix}reweight_max_min"] = float(wv.max() / wv.min().clamp(min=1e-12))
        stats[f"{prefix}reweight_std"] = float(wv.std(unbiased=False))
    loss = (per_token.float() * scored * w[:, None]).sum() / counts.sum().clamp(min=1)
    return loss
