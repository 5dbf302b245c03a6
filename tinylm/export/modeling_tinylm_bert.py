"""The BERT body of an exported tinylm model (copied into every export; imports only torch).

Mirrors tinylm/models/bert.py (LTG-BERT style): token embedding -> LayerNorm -> blocks of
self-attention and a GEGLU MLP, pre- or post-LN (`bert_norm`), relative (T5-bucketed per-head bias,
one table shared by all layers) or rotary positions (`bert_positions`), ELC-BERT layer weighting
(`bert_elc`), final LayerNorm (pre-LN). The MLM head (dense, GELU, LayerNorm, tied decoder with
bias) lives in modeling_tinylm.py. `causal=True` adds the causal mask (GPT-BERT's causal use).

Padding: padded keys are never attended to. Relative biases depend on j - i only, and rotary
positions count real tokens only, so a left-padded sentence gets the logits of the unpadded one.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modeling_tinylm_layers import LayerNorm, allowed_mask, real_positions


def relative_buckets(T: int, n_buckets: int, max_distance: int, device=None):
    """(T, T) bucket of the signed distance j - i (T5's bidirectional scheme), as tinylm's."""
    rel = torch.arange(T, device=device)[None, :] - torch.arange(T, device=device)[:, None]
    half = n_buckets // 2
    bucket = (rel > 0).long() * half
    dist = rel.abs()
    exact = half // 2
    log_bucket = exact + (
        torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, log_bucket)


def rotary_tables(positions, head_dim: int, base: float):
    """cos, sin (B, 1, T, D/2) for (B, T) integer positions."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq  # (B, T, D/2)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, positions):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if "bias" in positions:  # relative: the bias (every mask folded in as -inf) goes into the scores
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=positions["bias"].to(q.dtype))
        else:  # rotary
            q, k = apply_rotary(q, positions["cos"], positions["sin"]), apply_rotary(k, positions["cos"], positions["sin"])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=positions["keep"])
        return self.dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class GEGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 2 * config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.dropout(self.proj(F.gelu(gate, approximate="tanh") * up))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pre_ln = config.bert_norm == "pre"
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = Attention(config)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = GEGLU(config)

    def forward(self, x, positions):
        if self.pre_ln:
            x = x + self.attn(self.ln_attn(x), positions)
            return x + self.mlp(self.ln_mlp(x))
        x = self.ln_attn(x + self.attn(x, positions))
        return self.ln_mlp(x + self.mlp(x))


def build(model, config):
    if config.bert_norm not in ("pre", "post") or config.bert_positions not in ("relative", "rotary"):
        raise ValueError(f"unknown bert_norm={config.bert_norm!r} or bert_positions={config.bert_positions!r}")
    C, L = config.d_model, config.n_layer
    model.tok_emb = nn.Embedding(config.vocab_size, C)
    model.ln_emb = LayerNorm(C, config.bias, config.norm_eps)
    model.dropout = nn.Dropout(config.dropout)
    if config.bert_positions == "relative":
        model.rel_bias = nn.Embedding(config.bert_rel_buckets, config.n_head)
    model.blocks = nn.ModuleList(Block(config) for _ in range(L))
    model.layer_weights = (nn.ParameterList(nn.Parameter(torch.ones(i + 1)) for i in range(L + 1))
                           if config.bert_elc else None)
    model.ln_out = LayerNorm(C, config.bias, config.norm_eps) if config.bert_norm == "pre" else nn.Identity()


def forward(model, x, attention_mask=None, position_ids=None, causal=False, output_hidden_states=False):
    """x: token embeddings (B, T, C) -> (last hidden state (before the MLM head), hidden states or None)."""
    cfg = model.config
    B, T = x.shape[:2]
    if T > cfg.max_seq_len:
        raise ValueError(f"sequence length {T} exceeds max_seq_len={cfg.max_seq_len}")
    padded = attention_mask is not None and not bool(attention_mask.all())
    keep = allowed_mask(attention_mask if padded else None, T, causal, x.device) if (padded or causal) else None
    if cfg.bert_positions == "relative":
        buckets = relative_buckets(T, cfg.bert_rel_buckets, cfg.bert_rel_max_distance, x.device)
        bias = model.rel_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, T, T)
        positions = {"bias": bias if keep is None else bias.masked_fill(~keep, float("-inf"))}
    else:
        if position_ids is None:
            position_ids = real_positions(attention_mask, B, T, x.device)
        cos, sin = rotary_tables(position_ids, cfg.d_model // cfg.n_head, cfg.bert_rope_base)
        positions = {"cos": cos, "sin": sin, "keep": keep}
    x = model.dropout(model.ln_emb(x))  # o_0
    hidden = [x] if output_hidden_states else None
    if model.layer_weights is None:
        for block in model.blocks:
            x = block(x, positions)
            if hidden is not None:
                hidden.append(x)
    else:  # ELC: block l reads sum_i a[l, i] o_i, the head sum_i a[L, i] o_i
        outputs = [x]
        for block, w in zip(model.blocks, model.layer_weights):
            x_in = sum(w[i] * o for i, o in enumerate(outputs))
            outputs.append(block(x_in, positions) - x_in)
            if hidden is not None:
                hidden.append(outputs[-1] + x_in)
        w = model.layer_weights[-1]
        x = sum(w[i] * o for i, o in enumerate(outputs))
    x = model.ln_out(x)
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
