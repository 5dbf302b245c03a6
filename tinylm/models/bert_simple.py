"""The earlier, simplified BERT sketch (`model.bert_arch=simple`), kept for the ablation against
the faithful LTG-BERT / ELC-BERT of tinylm/models/bert.py.

Shapes: B batch, T time, C = d_model, H heads, D = C // H, F = d_ff, NB buckets.

    token embedding -> LayerNorm -> L blocks -> final LayerNorm (pre-LN) -> MLM head (dense,
    GELU (tanh), LayerNorm, decoder + bias)

- Blocks: self-attention and a GEGLU MLP, pre-LN or post-LN (`model.bert_norm`), biases and norm
  affines by `model.bias`.
- Positions: `relative` = one learned scalar per head and T5 bucket of j - i added to the scores (one
  table for all layers, zero at init); `rotary` = RoPE through tinylm.ops.attention.
- ELC weighting (`model.bert_elc`): o_0 the embedding output, o_l = block_l(x_l) - x_l; block l reads
  x_l = sum_{i<l} a[l, i] o_i and the head sum_{i<=L} a[L, i] o_i, every a initialised to 1 (the
  plain residual stream at initialisation), unnormalised.
- Init: N(0, model.init_std), residual projections / sqrt(2 L), relative biases zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models.bert_positions import apply_rotary, rotary_tables, t5_bucket_table
from tinylm.models.layers import LayerNorm

NORMS = ("pre", "post")


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, positions: dict, key_padding_mask=None, doc_ids=None, causal=False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if "bias" in positions:  # relative: scores q.k / sqrt(D) + bias[h, bucket(i - j)]
            # the content-to-position term of disentangled attention with one row for all queries:
            # (q.k + bias / scale) * scale, broadcast over batch and queries, no position-to-content
            scale = 1.0 / math.sqrt(C // self.n_head)
            c2p = (positions["bias"].t() / scale)[None, :, None, :]  # (1, H, 1, NB)
            y = ops.disentangled_attention(q, k, v, c2p, None, positions["buckets"], scale, causal, key_padding_mask,
                                           doc_ids)
        else:  # rotary
            cos, sin = positions["cos"], positions["sin"]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = ops.attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, doc_ids=doc_ids)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.dropout(self.proj(y))


class GEGLU(nn.Module):
    """proj(gelu(x W_gate) * (x W_up)) (Shazeer 2020)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.fc = nn.Linear(cfg.d_model, 2 * d_ff, bias=cfg.bias)  # gate and up in one matmul
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.dropout(self.proj(F.gelu(gate, approximate="tanh") * up))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre_ln = cfg.bert_norm == "pre"
        self.ln_attn = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln_mlp = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.mlp = GEGLU(cfg)

    def forward(self, x, positions, key_padding_mask=None, doc_ids=None, causal=False):
        if self.pre_ln:
            x = x + self.attn(self.ln_attn(x), positions, key_padding_mask, doc_ids, causal)
            return x + self.mlp(self.ln_mlp(x))
        x = self.ln_attn(x + self.attn(x, positions, key_padding_mask, doc_ids, causal))
        return self.ln_mlp(x + self.mlp(x))


def check(cfg: ModelConfig) -> None:
    if cfg.bert_norm not in NORMS:
        raise ValueError(f"model.bert_norm={cfg.bert_norm!r} is not a norm placement; use one of {', '.join(NORMS)}")
    if cfg.bert_positions == "relative" and not (
        cfg.bert_rel_buckets >= 4 and cfg.bert_rel_buckets % 2 == 0 and cfg.bert_rel_max_distance > cfg.bert_rel_buckets // 4
    ):
        raise ValueError("model.bert_rel_buckets must be even and at least 4, and model.bert_rel_max_distance "
                         "larger than a quarter of it")


def build(model: nn.Module, cfg: ModelConfig) -> None:
    """The sketch's modules on `model` (names as tinylm had them, so its checkpoints still load)."""
    C, L = cfg.d_model, cfg.n_layer
    model.ln_emb = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps)
    if cfg.bert_positions == "relative":
        model.rel_bias = nn.Embedding(cfg.bert_rel_buckets, cfg.n_head)  # (NB, H), shared by all layers
    model.blocks = nn.ModuleList(Block(cfg) for _ in range(L))
    # ELC weights: layer_weights[l] mixes o_0..o_l into block l's input; the last one feeds the head.
    model.layer_weights = nn.ParameterList(nn.Parameter(torch.ones(l + 1)) for l in range(L + 1)) if cfg.bert_elc else None
    model.ln_out = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps) if cfg.bert_norm == "pre" else nn.Identity()
    model.head_dense = nn.Linear(C, C, bias=True)
    model.head_ln = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps)


def init(model: nn.Module, cfg: ModelConfig) -> None:
    std = cfg.init_std
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    if cfg.bert_positions == "relative":
        nn.init.zeros_(model.rel_bias.weight)  # no positional preference at initialisation
    for name, p in model.named_parameters():  # residual projections: 1/sqrt(2 L), as GPT-2
        if name.endswith("proj.weight"):
            nn.init.normal_(p, std=std / math.sqrt(2 * cfg.n_layer))


def forward(model: nn.Module, x, key_padding_mask=None, doc_ids=None, causal=False) -> torch.Tensor:
    """Token embeddings (B, T, C) -> the head's transform of the last hidden state (B, T, C)."""
    cfg = model.cfg
    T = x.shape[1]
    if cfg.bert_positions == "relative":
        buckets = t5_bucket_table(T, cfg.bert_rel_buckets, cfg.bert_rel_max_distance, x.device)  # (2T - 1,)
        positions = {"bias": model.rel_bias.weight, "buckets": buckets}  # bias (NB, H)
    else:
        cos, sin = rotary_tables(T, cfg.d_model // cfg.n_head, cfg.bert_rope_base, x.device)
        positions = {"cos": cos, "sin": sin}
    x = model.dropout(model.ln_emb(x))  # o_0
    if model.layer_weights is None:
        for block in model.blocks:
            x = block(x, positions, key_padding_mask, doc_ids, causal)
    else:
        outputs = [x]  # o_0, o_1, ...
        for block, w in zip(model.blocks, model.layer_weights):
            x_in = sum(w[i] * o for i, o in enumerate(outputs))
            outputs.append(block(x_in, positions, key_padding_mask, doc_ids, causal) - x_in)
        w = model.layer_weights[-1]
        x = sum(w[i] * o for i, o in enumerate(outputs))
    return model.head_ln(F.gelu(model.head_dense(model.ln_out(x)), approximate="tanh"))
