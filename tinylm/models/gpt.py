"""GPT: a causal decoder with pre-LN blocks, learned positions and a tied output head.

Shapes: B batch, T time (tokens), C = d_model channels, H heads, D = C // H, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models.layers import (
    MLP,
    LayerNorm,
    SelfAttention,
    attention_flops_per_token,
    decay_groups,
    generate_by_rerunning,
    sample_next_token,
)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) doc ids -> (B, T) position of each token counted from its document's first token in
    the window (the window's first token counts as a start)."""
    T = doc_ids.shape[1]
    t = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    start = torch.ones_like(doc_ids, dtype=torch.bool)
    start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    return t - torch.where(start, t, torch.zeros_like(t)).cummax(dim=1).values


class LayerCache:
    """One block's keys and values (B, H, capacity, D) for the tokens generated so far: each new
    token computes only its own q, k, v and attends to the stored keys."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.k = self.v = None
        self.length = 0

    def attend(self, attn: SelfAttention, x: torch.Tensor) -> torch.Tensor:
        """attn's output for the new tokens x (B, T, C) at positions length .. length + T - 1."""
        B, T, C = x.shape
        q, k, v = attn.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        past, end = self.length, self.length + T
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {end} asked")
        if self.k is None:
            self.k = k.new_empty(B, attn.n_head, self.capacity, C // attn.n_head)
            self.v = torch.empty_like(self.k)
        self.k[:, :, past:end], self.v[:, :, past:end] = k, v
        self.length = end
        if past == 0:  # the prompt: plain causal attention, as in training (Triton on CUDA)
            y = ops.attention(q, k, v, causal=True)
        else:  # new tokens see every stored key and the earlier new ones
            mask = None
            if T > 1:
                mask = torch.arange(past, end, device=x.device)[:, None] >= torch.arange(end, device=x.device)[None, :]
            y = F.scaled_dot_product_attention(q, self.k[:, :, :end], self.v[:, :, :end], attn_mask=mask)
        return attn.dropout(attn.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class KVCache:
    """Every block's LayerCache; `length` tokens are stored (the next one sits at that position)."""

    def __init__(self, n_layer: int, capacity: int):
        self.layers = [LayerCache(capacity) for _ in range(n_layer)]

    @property
    def length(self) -> int:
        return self.layers[0].length


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

    def forward(self, x, delta, doc_ids=None, cache: LayerCache | None = None):
        """x: the residual stream (B, T, C); delta: output to add to it first, or None. With a
        cache (generation), x holds only the new tokens and attention reads the stored keys too."""
        if delta is None:  # the first block: nothing pending
            h = self.ln_attn(x)
        else:
            h, x = self.ln_attn(delta, residual=x)
        delta = self.attn(h, doc_ids=doc_ids) if cache is None else cache.attend(self.attn, h)
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

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """input_ids: (B, T) -> logits (B, T, V). doc_ids (B, T) keeps attention inside documents.
        With a cache, input_ids are the tokens after the cache's `length` stored ones (generation)."""
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        pos = torch.arange(start, start + T, device=input_ids.device)
        if doc_ids is not None:  # positions restart at each document start, as when it is run alone
            pos = document_positions(doc_ids) + start
        x = self.dropout(self.tok_emb(input_ids) + self.pos_emb(pos))  # (B, T, C)
        delta = None  # each block's last output, added to x by the next norm
        for i, block in enumerate(self.blocks):
            x, delta = block(x, delta, doc_ids=doc_ids, cache=cache.layers[i] if cache is not None else None)
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
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample continuations of (B, T) prompts; stops early when every row produced eos_id.

        With the KV cache (default) the prompt is read once and each new token costs one position.
        The model sees at most max_seq_len tokens: once the cache is full, every further token
        rereads the newest max_seq_len tokens (their positions restart at 0), exactly as the uncached
        path (use_cache=False, which reruns the whole window per token) does, so both give the same
        tokens."""
        ctx = self.cfg.max_seq_len
        if not use_cache:
            return generate_by_rerunning(lambda ids: self(ids)[:, -1, :], input_ids, max_new_tokens, ctx,
                                         temperature, top_k, eos_id, generator)
        if max_new_tokens <= 0:
            return input_ids
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        cache = KVCache(self.cfg.n_layer, ctx)
        logits = self(input_ids[:, -ctx:], cache=cache)[:, -1, :]
        for step in range(max_new_tokens):
            next_id = sample_next_token(logits.float(), temperature, top_k, generator)
            input_ids = torch.cat([input_ids, next_id], dim=1)
            if eos_id is not None:
                done |= next_id.squeeze(1) == eos_id
                if bool(done.all()):
                    break
            if step + 1 == max_new_tokens:
                break
            if cache.length < ctx:
                logits = self(next_id, cache=cache)[:, -1, :]
            else:  # no position left: restart the cache on the newest window
                cache = KVCache(self.cfg.n_layer, ctx)
                logits = self(input_ids[:, -ctx:], cache=cache)[:, -1, :]
        return input_ids
