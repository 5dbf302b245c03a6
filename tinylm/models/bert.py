"""BERT: LTG-BERT (Samuel et al. 2023) and ELC-BERT (Charpentier & Samuel 2023) as ltgoslo's
reference code defines them; it can also run causally (GPT-BERT, Charpentier & Samuel 2024).

Shapes: B batch, T time (tokens), C = d_model channels, H heads, D = C // H, F = d_ff, V vocabulary,
NB = model.bert_rel_buckets, R = 2 * NB - 1 relative position indices.

    o_0 = dropout(LN(E[input_ids]))                            (LN: no affine)
    blocks: a = attn(x), m = ffn(x + a)
        LTG-BERT: x <- x + a + m; the head reads the last x
        ELC-BERT: block l reads x_l = sum_i softmax(w_l)_i o_i over o_0 .. o_l (w_l zero at init)
                  and outputs o_{l+1} = a + m (no residual of x_l); the head reads o_L
    head: LN -> dense -> GELU -> LN -> dropout -> decoder (tied to E, with a bias)   (LNs: no affine)

- Attention (disentangled, as DeBERTa with LTG-BERT's choices): x -> LN (no affine) -> q, k = W_qk x
  + b, v = W_v x + b. The relative position embeddings P (R x C, one table shared by all layers)
  pass through their own LayerNorm (affine) and the same W_qk: Qp, Kp (R, C). With r = bucket(i - j)
  (log_buckets),
      score[i, j] = (q_i . k_j + q_i . Kp_r + Qp_r . k_j) / sqrt(3 D)
  then softmax (padding / document / causal masks as -inf), dropout, W_o + b, LN (affine), dropout.
  The position terms are computed once per layer as two (B, H, T, R) tables, q Kp^T and k Qp^T,
  and gathered by bucket in tinylm.ops.disentangled_attention: no (T, T, D) tensor is ever built,
  and on CUDA (Triton, kernels/bert_attention.py) no (T, T) one either.
- FFN (GEGLU): x -> LN (no affine) -> [u, g] = W_1 x -> u * gelu_tanh(g) -> LN (no affine) -> W_2 ->
  dropout; no biases.
- Init: every matrix and embedding truncated normal, std sqrt(2 / (5 C)), cut at +-2 std; the FFN's two
  matrices of layer l (0-based) scaled by sqrt(1 / (2 (l + 1))); biases zero, norm gains one.
- `model.bert_positions=rotary`: RoPE on q and k and tinylm.ops.attention (Triton on CUDA) with the
  usual 1 / sqrt(D) scale instead of the position terms; everything else as above.
- `model.bert_arch=simple`: the earlier sketch (tinylm/models/bert_simple.py), for ablations.
- Causal use (GPT-BERT): forward(..., causal=True) adds the causal mask; nothing else changes, so the
  same weights serve masked and causal training, and `generate` samples causally.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models import bert_simple
from tinylm.models.bert_positions import apply_rotary, log_bucket_table, rotary_tables
from tinylm.models.layers import LayerNorm, attention_flops_per_token, decay_groups, generate_by_rerunning

ARCHS = ("ltg", "simple")
POSITIONS = ("relative", "rotary")


class Norm(nn.Module):
    """LayerNorm without gain or bias (LTG-BERT's elementwise_affine=False), through tinylm.ops."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return ops.layer_norm(x, None, None, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.d_model
        self.n_head = cfg.n_head
        self.norm_in = Norm(cfg.norm_eps)
        self.qk = nn.Linear(C, 2 * C, bias=True)  # also projects the relative position embeddings
        self.v = nn.Linear(C, C, bias=True)
        self.proj = nn.Linear(C, C, bias=True)
        self.norm_out = LayerNorm(C, bias=True, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.p_drop = cfg.dropout

    def forward(self, x, positions: dict, key_padding_mask=None, doc_ids=None, causal=False):
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        h = self.norm_in(x)
        q, k = self.qk(h).split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, self.v(h)))  # (B, H, T, D)
        p_drop = self.p_drop if self.training else 0.0
        if "rel" in positions:
            qp, kp = self.qk(self.dropout(positions["rel"])).split(C, dim=-1)  # (R, C) each
            qp, kp = (t.view(-1, H, D).transpose(0, 1) for t in (qp, kp))  # (H, R, D)
            c2p, p2c = q @ kp.transpose(-1, -2), k @ qp.transpose(-1, -2)  # (B, H, T, R)
            y = ops.disentangled_attention(q, k, v, c2p, p2c, positions["buckets"], 1.0 / math.sqrt(3 * D), causal,
                                           key_padding_mask, doc_ids, p_drop)
        else:  # rotary
            q, k = apply_rotary(q, positions["cos"], positions["sin"]), apply_rotary(k, positions["cos"], positions["sin"])
            y = ops.attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, doc_ids=doc_ids)
        y = self.proj(y.transpose(1, 2).reshape(B, T, C))
        return self.dropout(self.norm_out(y))


class FeedForward(nn.Module):
    """LTG-BERT's GEGLU: LN -> W_1 -> u * gelu(g) -> LN -> W_2, no biases, no norm affines."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.norm_in = Norm(cfg.norm_eps)
        self.fc = nn.Linear(cfg.d_model, 2 * d_ff, bias=False)  # [u, g]
        self.norm_mid = Norm(cfg.norm_eps)
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        u, g = self.fc(self.norm_in(x)).chunk(2, dim=-1)
        return self.dropout(self.proj(self.norm_mid(u * F.gelu(g, approximate="tanh"))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = FeedForward(cfg)

    def forward(self, x, positions, key_padding_mask=None, doc_ids=None, causal=False):
        """What the block adds to its input: a + ffn(x + a), a = attn(x)."""
        a = self.attn(x, positions, key_padding_mask, doc_ids, causal)
        return a + self.mlp(x + a)


# --------------------------------------------------------------------------------------------------
# the model


class BERT(nn.Module):
    causal = False  # bidirectional by default: masked scoring (PLL) applies, not plain generation

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer at launch)")
        if cfg.bert_arch not in ARCHS:
            raise ValueError(f"model.bert_arch={cfg.bert_arch!r} is not a BERT architecture; use one of {', '.join(ARCHS)}")
        if cfg.bert_positions not in POSITIONS:
            raise ValueError(f"model.bert_positions={cfg.bert_positions!r} is not a position scheme; "
                             f"use one of {', '.join(POSITIONS)}")
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"model.d_model={cfg.d_model} must be divisible by model.n_head={cfg.n_head}")
        if cfg.bert_positions == "rotary" and (cfg.d_model // cfg.n_head) % 2:
            raise ValueError("rotary positions need an even head size (model.d_model / model.n_head)")
        if cfg.bert_arch == "simple":
            bert_simple.check(cfg)
        elif cfg.bert_positions == "relative" and not (cfg.bert_rel_buckets >= 4 and cfg.max_seq_len > cfg.bert_rel_buckets // 2 + 1):
            raise ValueError("model.bert_rel_buckets must be at least 4, and model.max_seq_len larger than half of it plus one")
        self.cfg = cfg
        C, L = cfg.d_model, cfg.n_layer
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.bert_arch == "simple":
            bert_simple.build(self, cfg)
        else:
            self.emb_norm = Norm(cfg.norm_eps)
            if cfg.bert_positions == "relative":  # shared by every layer
                self.rel_emb = nn.Parameter(torch.empty(2 * cfg.bert_rel_buckets - 1, C))
                self.rel_norm = LayerNorm(C, bias=True, eps=cfg.norm_eps)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(L))
            # ELC: layer_weights[l] (l + 1 logits) mixes o_0 .. o_l into block l's input
            self.layer_weights = nn.ParameterList(nn.Parameter(torch.zeros(l + 1)) for l in range(L)) if cfg.bert_elc else None
            self.head_norm_in = Norm(cfg.norm_eps)
            self.head_dense = nn.Linear(C, C, bias=True)
            self.head_norm = Norm(cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size, bias=True)  # the decoder, with its own bias
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        if cfg.bert_arch == "simple":
            bert_simple.init(self, cfg)
        else:
            self._init_ltg()

    def _init_ltg(self) -> None:
        """LTG-BERT's initialisation (see the module docstring)."""
        std = math.sqrt(2.0 / (5.0 * self.cfg.d_model))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if getattr(self, "rel_emb", None) is not None:
            nn.init.trunc_normal_(self.rel_emb, std=std, a=-2 * std, b=2 * std)
        with torch.no_grad():
            for l, block in enumerate(self.blocks):
                block.mlp.fc.weight.mul_(math.sqrt(1.0 / (2.0 * (l + 1))))
                block.mlp.proj.weight.mul_(math.sqrt(1.0 / (2.0 * (l + 1))))

    def _positions(self, T: int, device) -> dict:
        cfg = self.cfg
        if cfg.bert_positions == "relative":
            return {"rel": self.rel_norm(self.rel_emb), "buckets": log_bucket_table(T, cfg.bert_rel_buckets, cfg.max_seq_len, device)}
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
        T = input_ids.shape[1]
        # No length limit: relative buckets clamp far distances and rotary runs at any length, so
        # texts longer than training windows (entity tracking) are scored whole.
        x = self.tok_emb(input_ids)
        if self.cfg.bert_arch == "simple":
            return self.head(bert_simple.forward(self, x, key_padding_mask, doc_ids, causal))
        positions = self._positions(T, input_ids.device)
        x = self.dropout(self.emb_norm(x))  # o_0
        if self.layer_weights is None:  # LTG-BERT: the residual stream
            for block in self.blocks:
                x = x + block(x, positions, key_padding_mask, doc_ids, causal)
        else:  # ELC-BERT
            outputs = [x]
            for block, w in zip(self.blocks, self.layer_weights):
                a = torch.softmax(w, dim=0)
                x_in = sum(a[i] * o for i, o in enumerate(outputs))
                outputs.append(block(x_in, positions, key_padding_mask, doc_ids, causal))
            x = outputs[-1]
        h = self.head_norm(F.gelu(self.head_dense(self.head_norm_in(x))))
        return self.head(self.dropout(h))  # (B, T, V)

    # ----------------------------------------------------------------------------------------------

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """As every family, and the relative position embeddings undecayed like the token embedding
        (LTG-BERT decays no embedding)."""
        decay, no_decay = decay_groups(self, weight_decay)
        rel = getattr(self, "rel_emb", None)
        if rel is not None and any(p is rel for p in decay["params"]):
            decay["params"] = [p for p in decay["params"] if p is not rel]
            no_decay["params"].append(rel)
        return [decay, no_decay]

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
