"""Hugging Face modeling code of an exported tinylm model (copied into the export as is).

Loads with `trust_remote_code=True` through AutoModel (the body: `last_hidden_state`) and
AutoModelForCausalLM (GPT). Imports only torch and transformers, and the config relatively, so the
exported folder works without tinylm installed. The modules and parameter names mirror
tinylm/models/gpt.py and tinylm/models/layers.py (weights are copied one to one); the attention is
PyTorch's scaled_dot_product_attention, as tinylm's reference path on the CPU.

`config.family` picks the architecture. Only "gpt" is implemented; "bert" (AutoModelForMaskedLM)
and "mlstm" plug in beside it: their parts in TinyLMModel (IMPLEMENTED_FAMILIES) and, for BERT, a
TinyLMForMaskedLM head class listed in the export's auto_map.

attention_mask (B, T; 1 = real token) is honoured with left or right padding: padded keys are never
attended to, and positions count real tokens only, so a left-padded sentence gets the same logits as
the unpadded one.
"""


import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from .configuration_tinylm import TinyLMConfig

try:  # transformers >= 4.50 wants GenerationMixin named explicitly for generate()
    from transformers import GenerationMixin
except ImportError:  # pragma: no cover
    GenerationMixin = object

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


class LayerNorm(nn.Module):
    def __init__(self, dim: int, bias: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class MLP(nn.Module):
    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class SelfAttention(nn.Module):
    def __init__(self, config: TinyLMConfig, causal: bool):
        super().__init__()
        self.n_head = config.n_head
        self.causal = causal
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None):
        """x (B, T, C); attn_mask (B, 1, T, T) bool, True = may attend, or None (plain causal)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, config: TinyLMConfig, causal: bool):
        super().__init__()
        self.ln_attn = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.attn = SelfAttention(config, causal)
        self.ln_mlp = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.ln_attn(x), attn_mask)
        return x + self.mlp(self.ln_mlp(x))


def attention_mask_4d(attention_mask, causal: bool):
    """(B, T) 1/0 -> (B, 1, T, T) bool: causal (if asked) and only real keys. A padded query row
    attends to itself alone, so no row is empty (its output is ignored anyway)."""
    B, T = attention_mask.shape
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    eye = torch.eye(T, dtype=torch.bool, device=attention_mask.device)[None, None]
    if causal:
        keep = keep & torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()[None, None]
    return keep | eye


class TinyLMPreTrainedModel(PreTrainedModel):
    config: TinyLMConfig  # transformers >= 5 reads the config class from this annotation
    config_class = TinyLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)


IMPLEMENTED_FAMILIES = ("gpt",)


class TinyLMModel(TinyLMPreTrainedModel):
    """AutoModel: the body without a head; returns last_hidden_state (B, T, hidden_size).

    gpt: token + learned position embeddings, pre-LN causal blocks, final LayerNorm (tinylm GPT).
    A masked family (bert) would build the same parts with causal=False and its own embeddings."""

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        if config.family not in IMPLEMENTED_FAMILIES:
            raise ValueError(f"tinylm family {config.family!r} is not implemented in this export; "
                             f"implemented: {', '.join(IMPLEMENTED_FAMILIES)}")
        self.causal = config.family == "gpt"
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal=self.causal) for _ in range(config.n_layer))
        self.ln_out = LayerNorm(config.d_model, config.bias, config.norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_emb

    def set_input_embeddings(self, value):
        self.tok_emb = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.tok_emb(input_ids)
        B, T = inputs_embeds.shape[:2]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.config.max_seq_len}")
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attn_mask = attention_mask_4d(attention_mask, causal=self.causal)
        if position_ids is None:
            if attention_mask is not None:  # positions count real tokens: left padding changes nothing
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(T, device=inputs_embeds.device)[None].expand(B, T)
        x = self.dropout(inputs_embeds + self.pos_emb(position_ids))
        hidden = [x] if output_hidden_states else None
        for block in self.blocks:
            x = block(x, attn_mask)
            if hidden is not None:
                hidden.append(x)
        x = self.ln_out(x)
        if hidden is not None:
            hidden[-1] = x
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden is not None else None)


class TinyLMForCausalLM(TinyLMPreTrainedModel, GenerationMixin):
    """AutoModelForCausalLM (GPT): logits (B, T, V); loss when labels are given (shifted inside)."""

    if _TRANSFORMERS_MAJOR >= 5:
        _tied_weights_keys = {"lm_head.weight": "model.tok_emb.weight"}
    else:
        _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        if config.family != "gpt":
            raise ValueError(f"AutoModelForCausalLM is the GPT head; this export's family is {config.family!r}")
        self.model = TinyLMModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.tok_emb

    def set_input_embeddings(self, value):
        self.model.tok_emb = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            if attention_mask is not None:
                shift_labels = shift_labels.masked_fill(attention_mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No key/value cache: the whole (window of the) sequence is recomputed at each step.
        input_ids = input_ids[:, -self.config.max_seq_len :]
        if attention_mask is not None:
            attention_mask = attention_mask[:, -self.config.max_seq_len :]
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _supports_default_dynamic_cache(self):  # transformers >= 4.45: do not build a cache
        return False
