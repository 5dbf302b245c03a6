"""Latent bootstrapping (`objective=bootstrap`; Samuel 2023, "Mean BERTs make erratic language
teachers: the effectiveness of latent bootstrapping in low-resource settings", Boot-BERT).

A BERT (the student, the model that is trained, evaluated and exported) reads the masked input and
predicts, at every masked position, the contextual embedding that an exponential-moving-average copy
of itself (the teacher) computes from the unmasked input:

    target_i = LN(mean_{l in bootstrap_layers} LN(teacher_l(x)_i))      (LN: no affine)
    pred_i   = P(LN(student_L(x~)_i))      P: Linear -> GELU -> LN (no affine) -> Linear (predictor)
    loss     = smooth_l1(pred, target) + bootstrap_mlm_weight * MLM(x~)      (or mse)
    teacher <- d * teacher + (1 - d) * student after each optimizer step,
               d moving linearly from ema_decay to ema_decay_end over training

As ltgoslo/boot-bert (pretrain/model.py, pretrain/train.py): the teacher is a frozen copy of the
embedding and encoder updated by EMA (0.996 -> 1.0), run in eval mode on the full input; the target
is its last hidden state at the masked positions, layer-normalised without affine; the student's
embedding goes through a Linear-GELU-LN-Linear predictor (truncated-normal init sqrt(2 / (5 C)), zero
biases); smooth-L1 loss plus 0.1 x the MLM loss. Deviations, for one BERT body shared with the other
objectives:
- The student is our BERT run on the whole corrupted window (mlm's masking: 80/10/10, the rate
  schedule), not the reference's MAE-style encoder over the unmasked tokens plus a 4-layer decoder.
- The student's embedding is its last block's output layer-normalised (the reference's encoder ends
  in an affine LayerNorm; LTG-BERT here has its norms inside the sublayers and the head).
- The teacher copies the whole model (its unused MLM head included) and may average several layers
  (`bootstrap_layers`, data2vec's top-K; the reference uses the last only, [-1], our default).
- The MLM weight is constant (the reference's start/end schedule is 0.1 -> 0.1 too).
- EMA updates follow every optimizer step the loop applies (an fp16 step the GradScaler skips
  still updates the teacher; the reference skips it).
A layer's hidden state is what the residual stream holds after block l (LTG-BERT), or block l's
output o_{l+1} (ELC-BERT, whose head reads o_L; the `simple` sketch, whose blocks add their own
residual). Index -1 is the last block.

The teacher and the predictor are the objective's modules (`objective.safetensors` in every
checkpoint, so a resumed run continues bit-exactly); the predictor is trained with the model;
neither is exported. Evaluation and scorer=auto read a bootstrap-trained BERT as mlm (pll).
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.train.masking import IGNORE, N_SPECIAL
from tinylm.train.mtp import base_module, head_as_identity
from tinylm.train.objectives import MLM, Stats


class Predictor(nn.Module):
    """Boot-BERT's prediction head: Linear -> GELU -> LayerNorm (no affine) -> Linear."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.fc = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.eps = eps
        std = math.sqrt(2.0 / (5.0 * d_model))
        for lin in (self.fc, self.out):
            nn.init.trunc_normal_(lin.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(x))
        return self.out(F.layer_norm(h, h.shape[-1:], eps=self.eps))


class BootstrapModules(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        base = base_module(model)
        self.teacher = copy.deepcopy(base).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.predictor = Predictor(base.cfg.d_model, base.cfg.norm_eps).to(next(base.parameters()).device)


def ema_decay_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear from `start` (step 0) to `end` (the last step), as the reference."""
    return start + (end - start) * min(1.0, step / max(1, total_steps))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameter by parameter; buffers copied."""
    for t, s in zip(teacher.parameters(), base_module(student).parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), base_module(student).buffers()):
        t.copy_(s)


@contextlib.contextmanager
def layer_states(model: nn.Module, layers: list[int]):
    """Collects the hidden states after the given blocks (see the module docstring) during the
    model calls within the block: yields a list filled in the order of `layers`."""
    base = base_module(model)
    residual = getattr(base.cfg, "bert_arch", "ltg") == "ltg" and getattr(base, "layer_weights", None) is None
    out: list = [None] * len(layers)
    hooks = []
    for slot, l in enumerate(layers):
        def hook(module, args, output, slot=slot):
            out[slot] = args[0] + output if residual else output
        hooks.append(base.blocks[l].register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def bootstrap_target(states: list[torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    """LN(mean_l LN(h_l)) (LN without affine, in float32); one layer: LN(h)."""
    normed = [F.layer_norm(h.float(), h.shape[-1:], eps=eps) for h in states]
    if len(normed) == 1:
        return normed[0]
    mean = torch.stack(normed).mean(dim=0)
    return F.layer_norm(mean, mean.shape[-1:], eps=eps)


def latent_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over the masked positions and channels (float32)."""
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    return F.smooth_l1_loss(pred.float(), target.float())


def teacher_states(teacher: nn.Module, input_ids: torch.Tensor, layers: list[int], doc_ids: torch.Tensor | None):
    """The teacher's hidden states at `layers` for the unmasked input (its head is not run)."""
    with torch.no_grad(), layer_states(teacher, layers) as states, head_as_identity(teacher):
        teacher(input_ids) if doc_ids is None else teacher(input_ids, doc_ids=doc_ids)
    return states


class Bootstrap(MLM):
    """Boot-BERT (see the module docstring): the latent loss plus bootstrap_mlm_weight x the MLM
    loss. Evaluated (dev loss) and scored as mlm."""

    name = "bootstrap"

    def __init__(self, cfg, model, *args, **kwargs):
        super().__init__(cfg, model, *args, **kwargs)
        self.module = BootstrapModules(model)

    def train_loss(self, model, input_ids, targets, step, doc_ids=None):
        stats: Stats = {}
        inputs, targets, chosen = self._mask(input_ids, self.mask_rate(step), self.generator, shifted=False, adaptive=False)
        inputs, targets, ids = inputs.to(self.device), targets.to(self.device), input_ids.to(self.device)
        docs = None if doc_ids is None else doc_ids.to(self.device)
        with layer_states(model, [-1]) as student:
            mlm, per_token, _ = ops.vocab_loss(model, lambda: self.run_masked(model, inputs, docs), targets, IGNORE,
                                               need_logits=self.cfg.reweight != "none")
        mlm = self._reweighted(mlm, per_token, targets, stats)
        scored = targets != IGNORE
        target = bootstrap_target(teacher_states(self.module.teacher, ids, list(self.cfg.bootstrap_layers), docs))
        h = student[0][scored]
        pred = self.module.predictor(F.layer_norm(h, h.shape[-1:]))
        # a batch without masked tokens (tiny windows): zero, still a function of the predictor
        latent = latent_loss(pred, target[scored], self.cfg.bootstrap_loss) if bool(scored.any()) else 0.0 * pred.sum()
        stats.update(mlm_loss=mlm.item(), latent_loss=latent.item(), mask_rate=float(chosen.sum()) / max(1, int((input_ids >= N_SPECIAL).sum())),
                     ema_decay=ema_decay_at(step, self.total_steps, self.cfg.ema_decay, self.cfg.ema_decay_end))
        return latent + self.cfg.bootstrap_mlm_weight * mlm, stats

    def after_step(self, model, step: int) -> None:
        ema_update(self.module.teacher, model, ema_decay_at(step, self.total_steps, self.cfg.ema_decay, self.cfg.ema_decay_end))
