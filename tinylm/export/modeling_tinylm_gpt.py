"""The GPT body of an exported tinylm model (copied into every export; imports only torch).

Mirrors tinylm/models/gpt.py: token + learned position embeddings, pre-LN causal blocks, final
LayerNorm. tinylm's blocks are written in a fused-residual form; this is the textbook form of the
same function (x = x + attn(ln(x)); x = x + mlp(ln(x))). Parameter names are tinylm's.

Generation keeps a key/value cache (a transformers `Cache`, e.g. DynamicCache): given one, `forward`
reads only the new tokens and appends their keys and values (see `cached_attention`).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modeling_tinylm_layers import MLP, LayerNorm, SelfAttention, allowed_mask, real_positions


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = SelfAttention(config)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = MLP(config.d_model, config.intermediate_size, config.bias, config.dropout)

    def forward(self, x, attn_mask=None, cache=None, layer_idx=0):
        h = self.ln_attn(x)
        x = x + (self.attn(h, attn_mask) if cache is None else cached_attention(self.attn, h, attn_mask, cache, layer_idx))
        return x + self.mlp(self.ln_mlp(x))


def cached_attention(attn, x, attn_mask, cache, layer_idx):
    """attn's output for the new tokens x (B, T, C), their keys and values appended to the cache
    first; attn_mask (B|1, 1, T, past + T) bool, True = may attend."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x).split(C, dim=2)
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    k, v = cache.update(k, v, layer_idx)  # (B, H, past + T, D)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return attn.dropout(attn.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


def build(model, config):
    model.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
    model.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
    model.dropout = nn.Dropout(config.dropout)
    model.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
    model.ln_out = LayerNorm(config.d_model, config.bias, config.norm_eps)


def forward(model, x, attention_mask=None, position_ids=None, causal=True, output_hidden_states=False, cache=None):
    """x: token embeddings (B, T, C) -> (last hidden state, hidden states or None). Always causal.
    With a cache, x holds the tokens after its stored ones and attention_mask (if given) covers all
    of them (B, past + T)."""
    B, T = x.shape[:2]
    past = cache.get_seq_length() if cache is not None else 0
    S = past + T  # keys the new tokens see
    if S > model.config.max_seq_len:
        raise ValueError(f"sequence length {S} exceeds max_seq_len={model.config.max_seq_len}")
    attn_mask = None
    if cache is not None:  # the new queries are the last T rows of the full causal mask
        full = attention_mask if attention_mask is not None else torch.ones(B, S, dtype=torch.long, device=x.device)
        attn_mask = allowed_mask(full, S, True, x.device)[:, :, past:]
    elif attention_mask is not None and not bool(attention_mask.all()):
        attn_mask = allowed_mask(attention_mask, T, True, x.device)
    if position_ids is None:  # positions count real tokens: left padding changes nothing
        position_ids = real_positions(attention_mask, B, S, x.device)[:, past:]
    x = model.dropout(x + model.pos_emb(position_ids))
    hidden = [x] if output_hidden_states else None
    for i, block in enumerate(model.blocks):
        x = block(x, attn_mask, cache, i)
        if hidden is not None:
            hidden.append(x)
    x = model.ln_out(x)
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
