"""Building blocks shared by the model families; the hot paths go through tinylm.ops."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias, computed by tinylm.ops (Triton on CUDA, PyTorch on CPU).

    `norm(x, residual=r)` adds first and returns (LN(x + r), x + r): one fused kernel instead of an
    add followed by a norm."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return ops.layer_norm(x, self.weight, self.bias, self.eps, residual=residual)


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal or bidirectional, with optional padding / document masks."""

    def __init__(self, d_model: int, n_head: int, bias: bool, dropout: float, causal: bool):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"model.d_model={d_model} must be divisible by model.n_head={n_head}")
        self.n_head = n_head
        self.causal = causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, key_padding_mask=None, doc_ids=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, H, T, D)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = ops.attention(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask, doc_ids=doc_ids)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.dropout(self.proj(y))


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices (dim >= 2) except embeddings; none on
    vectors (norm gains, biases) or embeddings, which decay would only pull towards zero."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, V) logits of the last position -> (B, 1) next ids: greedy at temperature <= 0, else
    sampled from the temperature-scaled softmax, restricted to the top_k logits when given."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def attention_flops_per_token(n_params: int, n_layer: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs per token of a transformer: 6N for the matmuls plus 12 * L * d_model * T for
    the attention scores and their use (PaLM appendix B, nanoGPT's estimate_mfu)."""
    return 6 * n_params + 12 * n_layer * d_model * seq_len


@torch.no_grad()
def generate_by_rerunning(
    next_logits,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    context: int,
    temperature: float,
    top_k: int | None,
    eos_id: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Sampling for models without a cache: `next_logits(ids)` gives (B, V) logits for the last
    position of the newest `context` tokens, and is rerun after every new token. Stops early when
    every row has produced eos_id."""
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = next_logits(input_ids[:, -context:]).float()  # (B, V)
        next_id = sample_next_token(logits, temperature, top_k, generator)
        input_ids = torch.cat([input_ids, next_id], dim=1)
        if eos_id is not None:
            done |= next_id.squeeze(1) == eos_id
            if bool(done.all()):
                break
    return input_ids
