"""GPT: a causal decoder with pre-LN blocks, learned positions and a tied output head.

Shapes: B batch, T time (tokens), C = d_model channels, H heads, D = C // H, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tinylm.config import ModelConfig
from tinylm.models.layers import (
    MLP,
    LayerNorm,
    SelfAttention,
    attention_flops_per_token,
    decay_groups,
    generate_by_rerunning,
)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) doc ids -> (B, T) position of each token counted from its document's first token in
    the window (the window's first token counts as a start)."""
    T = doc_ids.shape[1]
    t = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    start = torch.ones_like(doc_ids, dtype=torch.bool)
    start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    return t - torch.where(start, t, torch.zeros_like(t)).cummax(dim=1).values


class Block(nn.Module):
    """Pre-LN block, written in the fused-residual form: instead of `x = x + f(norm(x))` it takes
    the residual stream and the previous sublayer's output not yet added to it, and lets each
    norm do the add (`norm(delta, residual=x)` returns the normed sum and the sum). Mathematically
    the same as the textbook block; on GPU it saves a read and a write of the stream per sublayer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.ln_attn = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg.d_model, cfg.n_head, cfg.bias, cfg.dropout, causal=True)
        self.ln_mlp = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, d_ff, cfg.bias, cfg.dropout)

    def forward(self, x, delta, doc_ids=None):
        """x: the residual stream (B, T, C); delta: output to add to it first, or None."""
        if delta is None:  # the first block: nothing pending
            h = self.ln_attn(x)
        else:
            h, x = self.ln_attn(delta, residual=x)
        delta = self.attn(h, doc_ids=doc_ids)
        h, x = self.ln_mlp(delta, residual=x)
        return x, self.mlp(h)


class GPT(nn.Module):
    causal = True  # generation and causal scoring apply

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer at launch)")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_out = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) keep the residual stream's
        # variance independent of depth at initialisation.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, T) -> logits (B, T, V). doc_ids (B, T) keeps attention inside documents."""
        B, T = input_ids.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        pos = torch.arange(T, device=input_ids.device)
        if doc_ids is not None:  # positions restart at each document start, as when it is run alone
            pos = document_positions(doc_ids)
        x = self.dropout(self.tok_emb(input_ids) + self.pos_emb(pos))  # (B, T, C)
        delta = None  # each block's last output, added to x by the next norm
        for block in self.blocks:
            x, delta = block(x, delta, doc_ids=doc_ids)
        h = self.ln_out(x) if delta is None else self.ln_out(delta, residual=x)[0]
        return self.head(h)  # (B, T, V)

    # ----------------------------------------------------------------------------------------------

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(self, weight_decay)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6N for the matmuls plus attention scores
        (PaLM appendix B), as in nanoGPT's estimate_mfu."""
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
        """Sample continuations of (B, T) prompts; stops early when every row produced eos_id."""
        return generate_by_rerunning(lambda ids: self(ids)[:, -1, :], input_ids, max_new_tokens, self.cfg.max_seq_len,
                                     temperature, top_k, eos_id, generator)
