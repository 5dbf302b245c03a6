"""Multi-token prediction (`objective.mtp_heads=n`; Gloeckle et al. 2024, "Better & Faster Large
Language Models via Multi-token Prediction").

The model's own head predicts token t+1 at position t, as always; n - 1 extra heads on the same trunk
predict tokens t+2 .. t+n. Extra head k (k = 2..n) is a small residual block on the trunk output h
(the input of the model's output head: after GPT's / mLSTM's final norm, after BERT's head transform)

    h_k = h + W2_k gelu(W1_k LN(h))          (W2_k zero at init: every head starts as the main one)

and shares the model's unembedding (its `head`, weight and bias): logits_k = head(h_k). The heads
are parallel on the shared trunk as in the paper (not chained as in DeepSeek-V3), and the loss is

    loss = (CE_1 + mtp_weight * sum_{k=2..n} CE_k) / n

(n = 1: the plain next-token loss; mtp_weight = 1: the mean of the n heads' losses, which keeps the
trunk's gradient scale as n grows where the paper's sum would not). CE_k is read at every position
t whose target t+k lies in the window; with train.doc_mask, also only where the token before the
target is in the same document as position t.

Memory (the paper's trick): the trunk runs once; h is detached and each extra head's forward and
backward run one after the other into the detached copy (torch.autograd.grad), so only one head's
(tokens, V) logits exist at a time; their gradients (for h, the unembedding and the head's own
weights) are summed. The training loop still makes ONE backward call per micro-batch: the summed
gradients enter the graph as the zero-valued linear term sum(x * g) - sum(x * g).detach(), whose
gradient for x is g. So the loop's loss scaling (fp16 GradScaler), grad accumulation (loss /
grad_accum), autocast and DDP's no_sync all apply to the extra heads unchanged. Under fp16 the
inner backward runs at the loop's current loss scale too (`loss_scale`, else its small gradients
would underflow in fp16 before the outer backward scales them); the summed gradients are kept in
fp32 and unscaled, so the linear term hands the outer backward the true gradient to scale again.

The extra heads belong to the objective, not the model: their weights are trained (Muon for the
matrices under optim=muon), clipped with the model's, averaged across DDP ranks
(distributed.average_grads) and checkpointed in `objective.safetensors`, but neither the milestones,
the evaluation nor the HF export see them: the main head is the model.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops


class ExtraHead(nn.Module):
    def __init__(self, d_model: int, init_std: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.proj.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.proj(F.gelu(self.fc(self.norm(h))))


class MTPHeads(nn.Module):
    """heads[k - 2] predicts token t + k (k = 2..n)."""

    def __init__(self, n_heads: int, d_model: int, init_std: float = 0.02):
        super().__init__()
        self.heads = nn.ModuleList(ExtraHead(d_model, init_std) for _ in range(n_heads - 1))


def base_module(model: nn.Module) -> nn.Module:
    """The model itself under torch.compile's and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            return model
        model = inner


@contextlib.contextmanager
def head_as_identity(model: nn.Module):
    """Within the block, the model's forward returns its head's input (the trunk output)."""
    base = base_module(model)
    head = base.head
    base.head = nn.Identity()
    try:
        yield head
    finally:
        base.head = head


def shifted_targets(targets: torch.Tensor, k: int, ignore: int, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Targets of head k: token t + k at position t. targets[:, t] is token t + 1, so head k reads
    targets[:, t + k - 1]; the last k - 1 positions have none. With doc_ids, a target whose preceding
    token lies in another document than position t is ignored."""
    out = torch.full_like(targets, ignore)
    T = targets.shape[1]
    if k - 1 >= T:
        return out
    out[:, : T - k + 1] = targets[:, k - 1 :]
    if doc_ids is not None:
        other = doc_ids[:, k - 1 :] != doc_ids[:, : T - k + 1]
        out[:, : T - k + 1][other] = ignore
    return out


def _at_least_fp32(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _linear_term(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum(x * g) - its value: zero, with gradient g for each x (g in fp32 at least, so an fp16
    x's gradient is rounded only after the outer backward has scaled it)."""
    s = sum((x.to(g.dtype) * g).sum() for x, g in pairs)
    return s - s.detach()


def extra_heads_loss(hidden: torch.Tensor, head: nn.Linear, heads: MTPHeads, targets: torch.Tensor, ignore: int,
                     weight: float, doc_ids: torch.Tensor | None, stats: dict, prefix: str = "",
                     loss_scale: float = 1.0) -> torch.Tensor:
    """mtp_weight * sum_k CE_k (value), with each head's gradient computed now, one head at a time,
    and handed to the outer backward through a linear term (see the module docstring).
    loss_scale: the fp16 loss scale of the outer backward (1 without loss scaling)."""
    h = hidden.detach().requires_grad_(True)
    w = head.weight.detach().requires_grad_(True)
    b = None if head.bias is None else head.bias.detach().requires_grad_(True)
    leaves = [h, w] + ([b] if b is not None else [])
    sums = [torch.zeros_like(x, dtype=_at_least_fp32(x)) for x in leaves]
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = 0.0
    for k, block in enumerate(heads.heads, start=2):
        tk = shifted_targets(targets, k, ignore, doc_ids)
        own = list(block.parameters())
        with torch.enable_grad():
            loss_k, _ = ops.linear_cross_entropy(block(h), w, b, tk, ignore)
            grads = torch.autograd.grad(loss_k * (weight * loss_scale), leaves + own, allow_unused=True)
        for s, g in zip(sums, grads[: len(leaves)]):
            if g is not None:
                s.add_(g.to(s.dtype) / loss_scale)
        pairs += [(p, g.to(_at_least_fp32(g)) / loss_scale) for p, g in zip(own, grads[len(leaves):]) if g is not None]
        stats[f"{prefix}mtp_loss_{k}"] = float(loss_k.detach())
        total = total + weight * loss_k.detach()
    outer = [hidden, head.weight] + ([head.bias] if head.bias is not None else [])
    return total + _linear_term(pairs + list(zip(outer, sums)))


def mtp_vocab_loss(model: nn.Module, forward, heads: MTPHeads, targets: torch.Tensor, ignore: int, weight: float,
                   need_logits: bool, doc_ids: torch.Tensor | None, stats: dict, prefix: str = "", loss_scale: float = 1.0):
    """As tinylm.ops.vocab_loss (main-head mean loss, per-token losses, logits or None) plus the
    extra heads' term: (hard, per_token, logits, extra); the objective's loss is (hard + extra) / n."""
    with head_as_identity(model) as head:
        hidden = forward()
    if need_logits:  # reweighting or teachers: the unfused path (per-token losses carry gradients)
        logits = F.linear(hidden, head.weight, head.bias)
        per_token = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore,
                                    reduction="none").view(targets.shape)
        hard = per_token.sum() / (targets != ignore).sum().clamp(min=1)
    else:
        logits = None
        hard, per_token = ops.linear_cross_entropy(hidden, head.weight, head.bias, targets, ignore)
    extra = extra_heads_loss(hidden, head, heads, targets, ignore, weight, doc_ids, stats, prefix, loss_scale)
    return hard, per_token, logits, extra
