"""BERT: an LTG-BERT-style bidirectional encoder that can also run causally (GPT-BERT).

Shapes: B batch, T time (tokens), C = d_model channels, H heads, D = C // H, F = d_ff, V vocabulary,
NB relative-position buckets.

    input_ids -> token embedding -> LayerNorm -> L blocks -> MLM head (dense, GELU, LayerNorm,
    tied decoder + bias) -> logits

- Blocks: self-attention and a GEGLU MLP (LTG-BERT), each with its residual add; pre-LN (norm before
  each sublayer) or post-LN (norm after the residual add, the original BERT) by `model.bert_norm`.
  The GEGLU MLP has three matrices C x F; `model.d_ff` = 0 means 4 * d_model as for GPT, the
  shipped configs set it to ~8/3 * d_model, which costs what a plain 4 * d_model MLP costs.
- Positions (`model.bert_positions`), no absolute position embeddings:
  relative: a learned per-head bias b[h, bucket(j - i)] added to every attention score (T5 / DeBERTa
            bucketing: exact for small distances, log-spaced up to bert_rel_max_distance, separate
            buckets per direction), one table shared by all layers as in T5. The bias goes into the
            scores, so attention runs as torch's scaled_dot_product_attention with a float mask (the
            padding, document and causal masks folded into it as -inf) rather than tinylm.ops.
  rotary:   q and k rotated by position (RoPE), then tinylm.ops.attention (Triton on CUDA) with the
            key_padding_mask / doc_ids / causal flag passed through.
- ELC-BERT layer weighting (`model.bert_elc`, Charpentier & Samuel 2023): call o_0 the embedding
  output and o_l = block_l(x_l) - x_l what block l adds. Block l reads x_l = sum_{i<l} a[l, i] o_i
  and the head reads sum_{i<=L} a[L, i] o_i, with every a initialised to 1: exactly the plain
  residual stream at initialisation, and the model learns to re-weight earlier layers.
- Causal use (GPT-BERT): forward(..., causal=True) applies a causal mask; nothing else changes, so
  the same weights serve masked and causal training, and `generate` samples causally.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models.layers import LayerNorm, attention_flops_per_token, decay_groups, generate_by_rerunning

NORMS = ("pre", "post")
POSITIONS = ("relative", "rotary")


# --------------------------------------------------------------------------------------------------
# positions


def relative_buckets(T: int, n_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(T, T) bucket of the signed distance j - i (key j, query i), T5's bidirectional scheme: half
    the buckets per direction; within a direction half of them exact (distances 0..n-1), the rest
    log-spaced up to max_distance, beyond which distances share the last bucket."""
    rel = torch.arange(T, device=device)[None, :] - torch.arange(T, device=device)[:, None]  # (T, T): j - i
    half = n_buckets // 2
    bucket = (rel > 0).long() * half  # keys after the query use the upper half
    dist = rel.abs()
    exact = half // 2
    log_bucket = exact + (
        torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, log_bucket)


def rotary_tables(T: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, D/2) for RoPE on pairs (x[..., :D/2], x[..., D/2:])."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(T, device=device).float()[:, None] * inv_freq[None, :]  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by position (the half-split convention of GPT-NeoX / LLaMA)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# blocks


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"model.d_model={cfg.d_model} must be divisible by model.n_head={cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, positions: dict, key_padding_mask=None, doc_ids=None, causal=False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if "bias" in positions:  # relative: scores + bias, every mask folded into the float mask
            allowed = ops.attention_mask(T, causal, key_padding_mask, doc_ids, x.device)  # (B|1, 1, T, T) or None
            bias = positions["bias"].to(q.dtype)  # (1, H, T, T)
            if allowed is not None:
                bias = bias.masked_fill(~allowed, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            if allowed is not None:  # a query with no visible key gives zeros (as tinylm.ops does)
                y = y.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
        else:  # rotary
            cos, sin = positions["cos"], positions["sin"]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = ops.attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, doc_ids=doc_ids)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.dropout(self.proj(y))


class GEGLU(nn.Module):
    """proj(gelu(x W_gate) * (x W_up)) (Shazeer 2020), as in LTG-BERT."""

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


# --------------------------------------------------------------------------------------------------
# the model


class BERT(nn.Module):
    causal = False  # bidirectional by default: masked scoring (PLL) applies, not plain generation

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer at launch)")
        if cfg.bert_norm not in NORMS:
            raise ValueError(f"model.bert_norm={cfg.bert_norm!r} is not a norm placement; use one of {', '.join(NORMS)}")
        if cfg.bert_positions not in POSITIONS:
            raise ValueError(f"model.bert_positions={cfg.bert_positions!r} is not a position scheme; "
                             f"use one of {', '.join(POSITIONS)}")
        if cfg.bert_positions == "relative" and not (
            cfg.bert_rel_buckets >= 4 and cfg.bert_rel_buckets % 2 == 0 and cfg.bert_rel_max_distance > cfg.bert_rel_buckets // 4
        ):
            raise ValueError("model.bert_rel_buckets must be even and at least 4, and model.bert_rel_max_distance "
                             "larger than a quarter of it")
        if cfg.bert_positions == "rotary" and (cfg.d_model // max(cfg.n_head, 1)) % 2:
            raise ValueError("rotary positions need an even head size (model.d_model / model.n_head)")
        self.cfg = cfg
        C, L = cfg.d_model, cfg.n_layer
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.ln_emb = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.bert_positions == "relative":
            self.rel_bias = nn.Embedding(cfg.bert_rel_buckets, cfg.n_head)  # (NB, H), shared by all layers
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(L))
        # ELC weights: layer_weights[l] mixes o_0..o_l into block l's input; the last one feeds the head.
        self.layer_weights = nn.ParameterList(nn.Parameter(torch.ones(l + 1)) for l in range(L + 1)) if cfg.bert_elc else None
        self.ln_out = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps) if cfg.bert_norm == "pre" else nn.Identity()
        # MLM head: transform, then the decoder tied to the embeddings, with its own bias
        self.head_dense = nn.Linear(C, C, bias=True)
        self.head_ln = LayerNorm(C, bias=cfg.bias, eps=cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size, bias=True)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.cfg.bert_positions == "relative":
            nn.init.zeros_(self.rel_bias.weight)  # no positional preference at initialisation
        for name, p in self.named_parameters():  # residual projections: 1/sqrt(2 L), as GPT-2
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layer))

    def _positions(self, T: int, device) -> dict:
        cfg = self.cfg
        if cfg.bert_positions == "relative":
            buckets = relative_buckets(T, cfg.bert_rel_buckets, cfg.bert_rel_max_distance, device)
            return {"bias": self.rel_bias(buckets).permute(2, 0, 1).unsqueeze(0)}  # (1, H, T, T)
        cos, sin = rotary_tables(T, cfg.d_model // cfg.n_head, cfg.bert_rope_base, device)
        return {"cos": cos, "sin": sin}

    def forward(
        self,
        input_ids: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V). key_padding_mask (B, T) bool, True = real token;
        doc_ids (B, T) keeps attention inside documents; causal=True for GPT-BERT's causal rows."""
        B, T = input_ids.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        positions = self._positions(T, input_ids.device)
        x = self.dropout(self.ln_emb(self.tok_emb(input_ids)))  # (B, T, C): o_0
        if self.layer_weights is None:
            for block in self.blocks:
                x = block(x, positions, key_padding_mask, doc_ids, causal)
        else:
            outputs = [x]  # o_0, o_1, ...
            for block, w in zip(self.blocks, self.layer_weights):
                x_in = sum(w[i] * o for i, o in enumerate(outputs))
                outputs.append(block(x_in, positions, key_padding_mask, doc_ids, causal) - x_in)
            w = self.layer_weights[-1]
            x = sum(w[i] * o for i, o in enumerate(outputs))
        h = self.head_ln(F.gelu(self.head_dense(self.ln_out(x)), approximate="tanh"))
        return self.head(h)  # (B, T, V)

    # ----------------------------------------------------------------------------------------------

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(self, weight_decay)

    def num_params(self, non_embedding: bool = True) -> int:
        """All parameters (there are no absolute position embeddings to leave out; the tied token
        embedding is also the decoder, as for GPT)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N plus the attention scores (PaLM appendix B), as GPT."""
        return attention_flops_per_token(self.num_params(), self.cfg.n_layer, self.cfg.d_model, seq_len)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Causal sampling (meaningful after causal or GPT-BERT training): as GPT.generate, with
        the model run with causal=True."""
        return generate_by_rerunning(lambda ids: self(ids, causal=True)[:, -1, :], input_ids, max_new_tokens, self.cfg.max_seq_len,
                                     temperature, top_k, eos_id, generator)
