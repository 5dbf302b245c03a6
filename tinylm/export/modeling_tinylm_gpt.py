"""The GPT body of an exported tinylm model (copied into every export; imports only torch).

Mirrors tinylm/models/gpt.py: token + learned position embeddings, pre-LN causal blocks, final
LayerNorm. tinylm's blocks are written in a fused-residual form; this is the textbook form of the
same function (x = x + attn(ln(x)); x = x + mlp(ln(x))). Parameter names are tinylm's.
"""

import torch.nn as nn

from .modeling_tinylm_layers import MLP, LayerNorm, SelfAttention, allowed_mask, real_positions


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = SelfAttention(config)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = MLP(config.d_model, config.intermediate_size, config.bias, config.dropout)

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.ln_attn(x), attn_mask)
        return x + self.mlp(self.ln_mlp(x))


def build(model, config):
    model.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
    model.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
    model.dropout = nn.Dropout(config.dropout)
    model.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
    model.ln_out = LayerNorm(config.d_model, config.bias, config.norm_eps)


def forward(model, x, attention_mask=None, position_ids=None, causal=True, output_hidden_states=False):
    """x: token embeddings (B, T, C) -> (last hidden state, hidden states or None). Always causal."""
    B, T = x.shape[:2]
    if T > model.config.max_seq_len:
        raise ValueError(f"sequence length {T} exceeds max_seq_len={model.config.max_seq_len}")
    attn_mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        attn_mask = allowed_mask(attention_mask, T, True, x.device)
    if position_ids is None:  # positions count real tokens: left padding changes nothing
        position_ids = real_positions(attention_mask, B, T, x.device)
    x = model.dropout(x + model.pos_emb(position_ids))
    hidden = [x] if output_hidden_states else None
    for block in model.blocks:
        x = block(x, attn_mask)
        if hidden is not None:
            hidden.append(x)
    x = model.ln_out(x)
    if hidden is not None:
        hidden[-1] = x
    return x, hidden
