"""Parts the exported families share (copied into every export; imports only torch).

Module and parameter names mirror tinylm/models/layers.py, so weights are copied one to one.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    def __init__(self, dim: int, bias: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class MLP(nn.Module):
    """fc -> GELU (tanh) -> proj, as tinylm's GPT and the mLSTM's attention blocks."""

    def __init__(self, d_model: int, d_ff: int, bias: bool, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


def allowed_mask(attention_mask, T: int, causal: bool, device, window: int = 0):
    """(B|1, 1, T, T) bool, True where query i may attend to key j: causal (if asked), within the
    last `window` keys (if > 0), and only real keys (attention_mask (B, T), 1 = real, or None).
    Every query may attend to itself, so no row is empty: a padded query then attends to itself
    alone (its output is ignored), and no NaN can reach the real positions."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    keep = torch.ones(T, T, dtype=torch.bool, device=device)
    if causal:
        keep = keep & (j <= i)
    if window > 0:
        keep = keep & (i - j < window)
    keep = keep[None, None]
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, :]
    return keep | (i == j)[None, None]


def real_positions(attention_mask, B: int, T: int, device):
    """(B, T) positions that count real tokens only (0 for the first real token), so a left-padded
    sentence sees the positions of the unpadded one."""
    if attention_mask is None:
        return torch.arange(T, device=device)[None].expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None):
        """x (B, T, C); attn_mask (B, 1, T, T) bool, True = may attend, or None (plain causal)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))
