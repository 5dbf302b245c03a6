"""Optimizers and learning-rate schedules.

- adamw: torch's AdamW on the model's decay groups.
- lamb:  `Lamb` (You et al. 2020): Adam moments, decoupled weight decay, and a layer-wise trust ratio
         ||w|| / ||update|| per parameter tensor.
- muon:  `Muon` (Jordan et al. 2024, modded-nanogpt): the hidden matrices take momentum (Nesterov)
         orthogonalised by a quintic Newton-Schulz iteration; embeddings, the output head, norms and
         biases take AdamW. One optimizer object with both kinds of parameter groups, so
         state_dict() has torch's shape ({"state": {int: {name: tensor}}, "param_groups": [...]}) and
         the checkpoints need nothing special.
         Why not torch.optim.Muon (torch >= 2.9): it is the same rule (its lerp momentum is ours times
         1 - momentum, which the normalisation removes; the same coefficients, decoupled decay and
         sqrt(max(1, rows / cols)) scale) but it always runs Newton-Schulz in bf16, on every device
         and dtype, and takes only 2-D parameters. Ours runs in bf16 on CUDA (as modded-nanogpt) and
         in the parameter's dtype elsewhere, so it can be checked against a float64 reference
         (tests/test_optim.py), and it takes batched matrices (the mLSTM's head-wise weights).
         tests/test_optim.py also checks that both agree to bf16 rounding.

Every group may carry `lr_scale`: the loop writes the scheduled lr into group["lr"] and the step uses
lr * lr_scale (Muon's matrices run at optim.muon_lr at the peak of the schedule).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tinylm.config import OptimConfig
from tinylm.errors import InputError
from tinylm.models.layers import decay_groups

SCHEDULES = ("cosine", "wsd", "constant")
OPTIMIZERS = ("adamw", "lamb", "muon")


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, extra: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """The optimizer of the model's parameters, then those of `extra` (an objective's own trained
    modules: MTP heads, the bootstrap predictor), grouped the same way (Muon for their matrices)."""
    if cfg.name not in OPTIMIZERS:
        raise InputError(f"optim.name={cfg.name!r} is not an optimizer; use one of {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"optim.schedule={cfg.schedule!r} is not a schedule; use one of {', '.join(SCHEDULES)}")
    groups = model.optimizer_groups(cfg.weight_decay)
    if extra is not None:  # after the model's, so a run without extras keeps its parameter order
        groups += [g for g in decay_groups(extra, cfg.weight_decay) if g["params"]]
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    if cfg.name == "muon":
        if cfg.muon_lr <= 0 or cfg.lr <= 0:
            raise InputError("optim.muon_lr and optim.lr must be > 0 for optim.name=muon")
        return Muon(muon_groups(model, groups, cfg), lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)


# --------------------------------------------------------------------------------------------------
# LAMB


def adam_moments(state: dict, grad: torch.Tensor, beta1: float, beta2: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Advance Adam's first and second moments in `state` (created on first use, in AdamW's
    state layout so checkpoints store them the same way); returns (m, v, step)."""
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(grad)
        state["exp_avg_sq"] = torch.zeros_like(grad)
    state["step"] += 1
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return m, v, state["step"].item()


class Lamb(torch.optim.Optimizer):
    """LAMB: per tensor, u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w, then
    w <- w - lr * (||w|| / ||u||) * u, with trust ratio 1 when either norm is 0. Bias-corrected
    Adam moments; the decay is decoupled (it never enters the moments)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, lr_scale=1.0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"] * group.get("lr_scale", 1.0)
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m, v, t = adam_moments(self.state[p], p.grad, beta1, beta2)
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.sub_(update * (lr * trust))
        return loss


# --------------------------------------------------------------------------------------------------
# Muon

# modded-nanogpt's quintic Newton-Schulz coefficients: they push every singular value of the
# normalised matrix towards ~1 (roughly into [0.7, 1.2]) in 5 steps, faster than the cubic iteration.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise g (..., rows, cols): U V^T of its SVD, by the quintic iteration
    X <- a X + (b A + c A^2) X with A = X X^T. Leading dimensions are a batch of matrices. Runs in
    bf16 on CUDA (as modded-nanogpt) and in g's own dtype elsewhere."""
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16) if g.is_cuda else g.clone()
    transposed = g.size(-2) > g.size(-1)
    if transposed:  # iterate on the wide orientation: A is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = x @ x.mT
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    if transposed:
        x = x.mT
    return x.to(g.dtype)


def muon_groups(model: nn.Module, groups: list[dict], cfg: OptimConfig) -> list[dict]:
    """Split the model's decay groups: hidden matrices (dim >= 2, neither an embedding nor the output
    head) go to Muon; everything else keeps its group (and its weight decay) under AdamW."""
    exclude = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        exclude.add(id(head.weight))
    muon_params, out = [], []
    for group in groups:
        rest = []
        for p in group["params"]:
            (muon_params if p.dim() >= 2 and id(p) not in exclude else rest).append(p)
        if rest:
            out.append({**group, "params": rest, "use_muon": False, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps,
                        "lr_scale": 1.0})
    if muon_params:
        out.insert(0, {"params": muon_params, "use_muon": True, "weight_decay": cfg.weight_decay,
                       "momentum": cfg.muon_momentum, "nesterov": cfg.muon_nesterov, "ns_steps": cfg.muon_ns_steps,
                       "lr_scale": cfg.muon_lr / cfg.lr})
    return out


class Muon(torch.optim.Optimizer):
    """Muon for groups with use_muon=True, AdamW for the others, in one optimizer.

    Muon, per matrix W with gradient G (momentum mu, effective lr = lr * lr_scale):
        B <- mu B + G;  U = G + mu B (Nesterov) or B;  O = NewtonSchulz(U)
        W <- W (1 - lr wd) - lr * max(1, rows / cols) ** 0.5 * O
    (modded-nanogpt's lerp form of the momentum differs from this one by a constant factor, which
    the orthogonalisation removes). AdamW: torch.optim.AdamW's update with decoupled decay.
    """

    def __init__(self, groups: list[dict], lr: float = 0.02):
        defaults = dict(lr=lr, lr_scale=1.0, weight_decay=0.0, use_muon=False, momentum=0.95, nesterov=True,
                        ns_steps=5, betas=(0.9, 0.95), eps=1e-8)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"] * group["lr_scale"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(p.grad)
                    u = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                    o = newton_schulz(u, group["ns_steps"])
                    p.mul_(1 - lr * wd)
                    p.add_(o, alpha=-lr * max(1.0, p.size(-2) / p.size(-1)) ** 0.5)
                else:
                    beta1, beta2 = group["betas"]
                    m, v, t = adam_moments(state, p.grad, beta1, beta2)
                    p.mul_(1 - lr * wd)
                    denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                    p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
        return loss


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
