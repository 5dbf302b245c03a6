"""The BERT body and MLM head of an exported tinylm model (copied into every export; imports only torch).

Mirrors tinylm/models/bert.py. `bert_arch`:
  ltg (default): LTG-BERT / ELC-BERT as ltgoslo's reference code: embedding LayerNorm (no affine);
      blocks of disentangled relative attention (q.k + q.Kp[r] + Qp[r].k over sqrt(3 D), r the log
      bucket of i - j, one relative embedding table with its own LayerNorm, projected by each layer's
      W_qk) with a LayerNorm before (no affine) and after (affine) it, and a GEGLU FFN with
      LayerNorms (no affine) before and inside; ELC-BERT's softmax layer weights (`bert_elc`); the head
      LN -> dense -> GELU -> LN -> tied decoder with bias. `bert_positions=rotary` uses RoPE instead of
      the position terms.
  simple: the earlier sketch: pre- or post-LN (`bert_norm`), T5-bucketed per-head bias or rotary,
      unnormalised ELC weights with the head on their sum, head dense -> GELU (tanh) -> LayerNorm.
`causal=True` adds the causal mask (GPT-BERT's causal use).

Padding: padded keys are never attended to. Relative positions depend on i - j only, and rotary
positions count real tokens only, so a left-padded sentence gets the logits of the unpadded one.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modeling_tinylm_layers import LayerNorm, allowed_mask, real_positions


def log_buckets(T: int, n_buckets: int, max_position: int, device=None):
    """(T, T) index in [0, 2 n_buckets - 2] of the distance i - j (LTG-BERT's log buckets), as tinylm's."""
    rel = torch.arange(T, device=device)[:, None] - torch.arange(T, device=device)[None, :]
    mid = n_buckets // 2
    dist = torch.where(rel.abs() < mid, mid - 1, rel.abs().clamp(max=max_position - 1))
    log_pos = torch.ceil(torch.log(dist.float() / mid) / math.log((max_position - 1) / mid) * (mid - 1)).long() + mid
    bucket = torch.where(dist <= mid, rel, log_pos * rel.sign())
    return bucket.clamp(-(n_buckets - 1), n_buckets - 1) + n_buckets - 1


def t5_buckets(T: int, n_buckets: int, max_distance: int, device=None):
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


class Norm(nn.Module):
    """LayerNorm without gain or bias."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], None, None, self.eps)


# --------------------------------------------------------------------------------------------------
# ltg


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.d_model
        self.n_head = config.n_head
        self.norm_in = Norm(config.norm_eps)
        self.qk = nn.Linear(C, 2 * C, bias=True)
        self.v = nn.Linear(C, C, bias=True)
        self.proj = nn.Linear(C, C, bias=True)
        self.norm_out = LayerNorm(C, True, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, positions):
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        h = self.norm_in(x)
        q, k = self.qk(h).split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, self.v(h)))  # (B, H, T, D)
        if "rel" in positions:  # position terms: (B, H, T, R) tables gathered by bucket
            qp, kp = self.qk(positions["rel"]).split(C, dim=-1)
            qp, kp = (t.view(-1, H, D).transpose(0, 1) for t in (qp, kp))  # (H, R, D)
            index = positions["buckets"].expand(B, H, T, T)
            bias = (q @ kp.transpose(-1, -2)).gather(-1, index) + (k @ qp.transpose(-1, -2)).transpose(-1, -2).gather(-2, index)
            scale = 1.0 / math.sqrt(3 * D)
            bias = bias * scale
            if positions["keep"] is not None:
                bias = bias.masked_fill(~positions["keep"], float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)
        else:
            q, k = apply_rotary(q, positions["cos"], positions["sin"]), apply_rotary(k, positions["cos"], positions["sin"])
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=positions["keep"])
        return self.dropout(self.norm_out(self.proj(y.transpose(1, 2).reshape(B, T, C))))


class FeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm_in = Norm(config.norm_eps)
        self.fc = nn.Linear(config.d_model, 2 * config.intermediate_size, bias=False)
        self.norm_mid = Norm(config.norm_eps)
        self.proj = nn.Linear(config.intermediate_size, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        u, g = self.fc(self.norm_in(x)).chunk(2, dim=-1)
        return self.dropout(self.proj(self.norm_mid(u * F.gelu(g, approximate="tanh"))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn = Attention(config)
        self.mlp = FeedForward(config)

    def forward(self, x, positions):
        a = self.attn(x, positions)
        return a + self.mlp(x + a)


# --------------------------------------------------------------------------------------------------
# simple (the earlier sketch)


class SimpleAttention(nn.Module):
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


class SimpleGEGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 2 * config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.dropout(self.proj(F.gelu(gate, approximate="tanh") * up))


class SimpleBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pre_ln = config.bert_norm == "pre"
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = SimpleAttention(config)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = SimpleGEGLU(config)

    def forward(self, x, positions):
        if self.pre_ln:
            x = x + self.attn(self.ln_attn(x), positions)
            return x + self.mlp(self.ln_mlp(x))
        x = self.ln_attn(x + self.attn(x, positions))
        return self.ln_mlp(x + self.mlp(x))


# --------------------------------------------------------------------------------------------------
# body and head


def _arch(config):
    arch = getattr(config, "bert_arch", "ltg")
    if arch not in ("ltg", "simple") or config.bert_positions not in ("relative", "rotary") or (
        arch == "simple" and config.bert_norm not in ("pre", "post")
    ):
        raise ValueError(f"unknown bert_arch={arch!r}, bert_positions={config.bert_positions!r} or bert_norm={config.bert_norm!r}")
    return arch


def build(model, config):
    C, L = config.d_model, config.n_layer
    model.tok_emb = nn.Embedding(config.vocab_size, C)
    model.dropout = nn.Dropout(config.dropout)
    if _arch(config) == "simple":
        model.ln_emb = LayerNorm(C, config.bias, config.norm_eps)
        if config.bert_positions == "relative":
            model.rel_bias = nn.Embedding(config.bert_rel_buckets, config.n_head)
        model.blocks = nn.ModuleList(SimpleBlock(config) for _ in range(L))
        model.layer_weights = (nn.ParameterList(nn.Parameter(torch.ones(i + 1)) for i in range(L + 1))
                               if config.bert_elc else None)
        model.ln_out = LayerNorm(C, config.bias, config.norm_eps) if config.bert_norm == "pre" else nn.Identity()
        return
    model.emb_norm = Norm(config.norm_eps)
    if config.bert_positions == "relative":
        model.rel_emb = nn.Parameter(torch.zeros(2 * config.bert_rel_buckets - 1, C))
        model.rel_norm = LayerNorm(C, True, config.norm_eps)
    model.blocks = nn.ModuleList(Block(config) for _ in range(L))
    model.layer_weights = nn.ParameterList(nn.Parameter(torch.zeros(i + 1)) for i in range(L)) if config.bert_elc else None


def _forward_simple(model, x, keep, position_ids, hidden):
    cfg = model.config
    B, T = x.shape[:2]
    if cfg.bert_positions == "relative":
        bias = model.rel_bias(t5_buckets(T, cfg.bert_rel_buckets, cfg.bert_rel_max_distance, x.device)).permute(2, 0, 1).unsqueeze(0)
        positions = {"bias": bias if keep is None else bias.masked_fill(~keep, float("-inf"))}
    else:
        cos, sin = rotary_tables(position_ids, cfg.d_model // cfg.n_head, cfg.bert_rope_base)
        positions = {"cos": cos, "sin": sin, "keep": keep}
    x = model.dropout(model.ln_emb(x))  # o_0
    if hidden is not None:
        hidden.append(x)
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
    return model.ln_out(x)


def forward(model, x, attention_mask=None, position_ids=None, causal=False, output_hidden_states=False):
    """x: token embeddings (B, T, C) -> (last hidden state (before the MLM head), hidden states or None)."""
    cfg = model.config
    B, T = x.shape[:2]
    # No length limit: every BERT position scheme is relative (log buckets clamp far distances) or rotary.
    padded = attention_mask is not None and not bool(attention_mask.all())
    keep = allowed_mask(attention_mask if padded else None, T, causal, x.device) if (padded or causal) else None
    if cfg.bert_positions == "rotary" and position_ids is None:
        position_ids = real_positions(attention_mask, B, T, x.device)
    hidden = [] if output_hidden_states else None
    if _arch(cfg) == "simple":
        x = _forward_simple(model, x, keep, position_ids, hidden)
    else:
        if cfg.bert_positions == "relative":
            positions = {"rel": model.rel_norm(model.rel_emb), "buckets": log_buckets(T, cfg.bert_rel_buckets, cfg.max_seq_len, x.device),
                         "keep": keep}
        else:
            cos, sin = rotary_tables(position_ids, cfg.d_model // cfg.n_head, cfg.bert_rope_base)
            positions = {"cos": cos, "sin": sin, "keep": keep}
        x = model.dropout(model.emb_norm(x))  # o_0
        outputs = [x]
        for l, block in enumerate(model.blocks):
            if model.layer_weights is None:  # LTG-BERT: the residual stream
                x = x + block(x, positions)
            else:  # ELC-BERT: block l reads softmax(w_l) . (o_0 .. o_l) and outputs o_{l+1}
                a = torch.softmax(model.layer_weights[l], dim=0)
                x = block(sum(a[i] * o for i, o in enumerate(outputs)), positions)
            outputs.append(x)
        if hidden is not None:
            hidden.extend(outputs)
    if hidden is not None:
        hidden[-1] = x
    return x, hidden


def build_head(model, config):
    """The MLM head's transform (its decoder is `lm_head`, built by modeling_tinylm.py)."""
    model.head_dense = nn.Linear(config.d_model, config.d_model, bias=True)
    if _arch(config) == "simple":
        model.head_ln = LayerNorm(config.d_model, config.bias, config.norm_eps)
    else:
        model.head_norm_in = Norm(config.norm_eps)
        model.head_norm = Norm(config.norm_eps)


def head(model, hidden):
    """Last hidden state -> the decoder's input."""
    if _arch(model.config) == "simple":
        return model.head_ln(F.gelu(model.head_dense(hidden), approximate="tanh"))
    return model.head_norm(F.gelu(model.head_dense(model.head_norm_in(hidden))))
