"""The mLSTM body of an exported tinylm model (copied into every export; imports only torch).

Mirrors tinylm/models/mlstm.py (xLSTM's mLSTM, pre-up-projection blocks, optionally every k-th block
sliding-window attention). The cell is computed in its parallel form, which tinylm shows equal to
the chunkwise and recurrent forms it trains and generates with: per head, with log D_tj =
sum_{s=j+1..t} log f_s + i~_j (j <= t) and m_t = max_j log D_tj,

    h_t = sum_j (q_t . k_j / sqrt(D)) exp(log D_tj - m_t) v_j / max(|sum_j (...)|, exp(-m_t))

O(T^2) memory per head, like attention; fine for the sentence lengths of evaluation and fine-tuning.

Padding: attention_mask (B, T) is treated as a document boundary: the real tokens form their own
segment, so the memory, the conv window and the attention see nothing of the padding, and a left-
or right-padded sentence gets the logits of the unpadded one. The real tokens of a row must be
contiguous (left or right padding).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modeling_tinylm_layers import MLP, LayerNorm, SelfAttention, allowed_mask


def mlstm_parallel(q, k, v, i_pre, log_f, seg=None):
    """q, k, v (B, H, T, D); i_pre, log_f (B, H, T); seg (B, T) or None -> h (B, H, T, D)."""
    B, H, T, D = q.shape
    k = k / math.sqrt(D)
    cum = log_f.cumsum(-1)
    log_d = cum[..., :, None] - cum[..., None, :] + i_pre[..., None, :]  # (B, H, T, T)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if seg is not None:
        keep = keep & (seg[:, None, :, None] == seg[:, None, None, :])
    log_d = torch.where(keep, log_d, float("-inf"))
    m = log_d.amax(-1)
    s = (q @ k.transpose(-2, -1)) * torch.exp(log_d - m[..., None])
    return (s @ v) / torch.maximum(s.sum(-1).abs(), torch.exp(-m))[..., None]


def causal_conv(x, weight, bias, seg=None):
    """Depthwise causal conv, x (B, T, E), weight (E, K); taps across a segment boundary are zero."""
    B, T, E = x.shape
    K = weight.shape[1]
    xp = torch.cat([x.new_zeros(B, K - 1, E), x], dim=1)
    y = bias.expand(B, T, E)
    for j in range(K):
        tap = xp[:, j : j + T]
        lag = K - 1 - j
        if seg is not None and 0 < lag < T:
            same = torch.ones(B, T, dtype=torch.bool, device=x.device)
            same[:, lag:] = seg[:, lag:] == seg[:, :-lag]
            tap = tap * same[..., None]
        y = y + weight[:, j] * tap
    return y


class HeadwiseLinear(nn.Module):
    def __init__(self, dim: int, size: int):
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.empty(dim // size, size, size))

    def forward(self, x):
        *lead, E = x.shape
        x = x.view(*lead, E // self.size, self.size)
        return torch.einsum("...ni,noi->...no", x, self.weight).reshape(*lead, E)


class MLSTMLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, H = config.d_model, config.n_head
        E = round(config.mlstm_proj_factor * d)
        bs = config.mlstm_qkv_blocksize
        self.E, self.H, self.eps, self.forget_gate = E, H, config.norm_eps, config.mlstm_forget_gate
        self.up = nn.Linear(d, 2 * E, bias=config.bias)
        self.conv_weight = nn.Parameter(torch.zeros(E, config.mlstm_conv_kernel))
        self.conv_bias = nn.Parameter(torch.zeros(E))
        make = (lambda: HeadwiseLinear(E, bs)) if bs else (lambda: nn.Linear(E, E, bias=config.bias))
        self.q, self.k, self.v = make(), make(), make()
        self.gates = nn.Linear(3 * E, 2 * H)
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.skip = nn.Parameter(torch.ones(E))
        self.down = nn.Linear(E, d, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, seg=None):
        B, T, _ = x.shape
        E, H, D = self.E, self.H, self.E // self.H
        x_m, z = self.up(x).chunk(2, dim=-1)
        c = F.silu(causal_conv(x_m, self.conv_weight, self.conv_bias, seg))
        q, k, v = self.q(c), self.k(c), self.v(x_m)
        gates = self.gates(torch.cat([q, k, v], dim=-1))
        gates = gates.to(torch.promote_types(gates.dtype, torch.float32))
        i_pre, f_pre = gates.transpose(1, 2).chunk(2, dim=1)  # (B, H, T) each
        log_f = F.logsigmoid(f_pre) if self.forget_gate == "sigmoid" else f_pre
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        h = mlstm_parallel(q, k, v, i_pre, log_f, seg).transpose(1, 2)  # (B, T, H, D)
        h = F.layer_norm(h, h.shape[-1:], None, None, self.eps).reshape(B, T, E).to(x.dtype) * self.norm_weight
        h = (h + self.skip * c) * F.silu(z)
        return self.dropout(self.down(h))


class MLSTMBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlstm = MLSTMLayer(config)

    def forward(self, x, seg=None, attention_mask=None):
        return x + self.mlstm(self.ln(x), seg)


class WindowAttention(SelfAttention):
    """Causal attention over the last `window` tokens (the query included), inside segments."""

    def __init__(self, config):
        super().__init__(config)  # qkv, proj, dropout: the parameter names of tinylm's WindowAttention
        self.window = config.mlstm_swa_window

    def forward(self, x, attention_mask=None):
        mask = allowed_mask(attention_mask, x.shape[1], True, x.device, window=self.window)
        return super().forward(x, mask)


class WindowAttentionBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = WindowAttention(config)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = MLP(config.d_model, config.intermediate_size, config.bias, config.dropout)

    def forward(self, x, seg=None, attention_mask=None):
        x = x + self.attn(self.ln_attn(x), attention_mask)
        return x + self.mlp(self.ln_mlp(x))


def build(model, config):
    if config.mlstm_forget_gate not in ("sigmoid", "exp"):
        raise ValueError(f"unknown mlstm_forget_gate={config.mlstm_forget_gate!r}")
    k = config.mlstm_swa_every
    model.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
    model.dropout = nn.Dropout(config.dropout)
    model.blocks = nn.ModuleList(
        WindowAttentionBlock(config) if k and (i + 1) % k == 0 else MLSTMBlock(config) for i in range(config.n_layer)
    )
    model.ln_out = LayerNorm(config.d_model, config.bias, config.norm_eps)


def forward(model, x, attention_mask=None, position_ids=None, causal=True, output_hidden_states=False):
    """x: token embeddings (B, T, C) -> (last hidden state, hidden states or None). Always causal;
    no position table, so any length is accepted (position_ids are ignored)."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    seg = attention_mask.long() if padded else None  # real tokens and padding: different segments
    mask = attention_mask if padded else None
    x = model.dropout(x)
    hidden = [x] if output_hidden_states else None
    for block in model.blocks:
        x = block(x, seg, mask)
        if hidden is not None:
            hidden.append(x)
    x = model.ln_out(x)
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
