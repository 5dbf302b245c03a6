"""Hugging Face modeling code of an exported tinylm model (copied into the export as is).

Imports only torch and transformers, and its sibling files relatively (transformers copies them
with it), so the exported folder works without tinylm installed:

    configuration_tinylm.py     TinyLMConfig
    modeling_tinylm_layers.py   LayerNorm, MLP, attention masks
    modeling_tinylm_gpt.py      the GPT body            (tinylm/models/gpt.py)
    modeling_tinylm_bert.py     the BERT body           (tinylm/models/bert.py)
    modeling_tinylm_mlstm.py    the mLSTM body          (tinylm/models/mlstm.py)

`config.family` picks the body; module and parameter names mirror tinylm's, so weights are copied
one to one (the body under `model.`, the head at the top: `lm_head`, and for BERT the head's
transform, `head_dense` and its norms). Attention is PyTorch's scaled_dot_product_attention, as tinylm's reference path.

    AutoModel               TinyLMModel: the body; last_hidden_state (B, T, hidden_size). Causal for
                            gpt / mlstm and a clm-trained bert, bidirectional for an mlm or hybrid bert.
    AutoModelForCausalLM    TinyLMForCausalLM (gpt, mlstm, and bert trained with clm or hybrid =
                            GPT-BERT): the body run causally; logits (B, T, V), token t+1 at t.
    AutoModelForMaskedLM    TinyLMForMaskedLM (bert): the body run bidirectionally; logits (B, T, V).
                            After mlm a masked token is predicted at its own position; after hybrid
                            (MNTP) at the position before it, as the BabyLM "mntp" backend reads it.

attention_mask (B, T; 1 = real token) is honoured with left or right padding: padded keys are never
attended to and positions count real tokens only, so padding does not change a sentence's logits.

Texts longer than the training window (BabyLM's entity tracking has inputs of 268+ tokens):
- gpt: its learned position table ends at max_seq_len, so AutoModelForCausalLM scores a longer text
  in sliding windows (max_seq_len tokens every max_seq_len // 2, the windows tinylm.eval uses).
- mlstm: no position table; the recurrence and the sliding-window attention take any length.
- bert: relative (bucketed) or rotary positions are defined at any distance; the body's length
  check (modeling_tinylm_bert.py) decides whether it accepts more than max_seq_len.

doc_ids (B, T), optional: packed documents (tinylm's train.doc_mask=true); each stretch of equal ids
is run as if alone, as the native models do with them.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast, MaskedLMOutput

from .configuration_tinylm import TinyLMConfig
from .modeling_tinylm_bert import build as build_bert, build_head as build_bert_head, forward as forward_bert, head as bert_head
from .modeling_tinylm_gpt import build as build_gpt, forward as forward_gpt
# Imported here although only the family files use it: transformers 4.x copies, from a local folder, only
# the files this module imports relatively (not theirs), so every helper module is named here.
from .modeling_tinylm_layers import LayerNorm as _LayerNorm  # noqa: F401
from .modeling_tinylm_mlstm import build as build_mlstm, forward as forward_mlstm

try:  # transformers >= 4.50 wants GenerationMixin named explicitly for generate()
    from transformers import GenerationMixin
except ImportError:  # pragma: no cover
    GenerationMixin = object

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# What this transformers calls the key/value cache in model inputs and outputs (newer: `cache`).
CACHE_KEY = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
FAMILIES = {"gpt": (build_gpt, forward_gpt), "bert": (build_bert, forward_bert), "mlstm": (build_mlstm, forward_mlstm)}


class TinyLMPreTrainedModel(PreTrainedModel):
    config: TinyLMConfig  # transformers >= 5 reads the config class from this annotation
    config_class = TinyLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block", "MLSTMBlock", "WindowAttentionBlock"]

    def _init_weights(self, module):
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)


class TinyLMModel(TinyLMPreTrainedModel):
    """AutoModel: the body without a head; returns last_hidden_state (B, T, hidden_size)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        if config.family not in FAMILIES:
            raise ValueError(f"tinylm family {config.family!r} is not implemented in this export; "
                             f"implemented: {', '.join(FAMILIES)}")
        FAMILIES[config.family][0](self, config)
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_emb

    def set_input_embeddings(self, value):
        self.tok_emb = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                output_hidden_states=None, return_dict=None, causal=None, doc_ids=None, **kwargs):
        """causal: None = the family's default (config.body_is_causal); True / False to choose
        (only a bert body can run both ways). doc_ids (B, T): packed documents, as tinylm trains
        with train.doc_mask=true (see _by_document). A gpt body takes a key/value cache (`cache`, or
        `past_key_values` in transformers 4)."""
        if inputs_embeds is None:
            inputs_embeds = self.tok_emb(input_ids)
        if causal is None:
            causal = self.config.body_is_causal
        run = FAMILIES[self.config.family][1]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if doc_ids is not None:
            x, hidden = self._by_document(run, inputs_embeds, attention_mask, position_ids, causal,
                                          bool(output_hidden_states), doc_ids)
        else:
            extra = {"cache": cache} if cache is not None and self.config.family == "gpt" else {}
            x, hidden = run(self, inputs_embeds, attention_mask, position_ids, causal, bool(output_hidden_states), **extra)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden is not None else None)

    def _by_document(self, run, x, attention_mask, position_ids, causal, want_hidden, doc_ids):
        """Each stretch of equal doc ids in a row is run on its own: what doc ids mean in tinylm's
        own models (attention and the mLSTM's memory and conv kept inside a document, positions
        counted from its start). One body call per document: for packed inputs, not for speed."""
        def piece(t, b, s, e):
            return None if t is None else t[b : b + 1, s:e]

        rows, row_hidden = [], []
        for b in range(x.shape[0]):
            ids = doc_ids[b]
            cuts = [0, *((ids[1:] != ids[:-1]).nonzero().flatten() + 1).tolist(), x.shape[1]]
            outs = [run(self, x[b : b + 1, s:e], piece(attention_mask, b, s, e), piece(position_ids, b, s, e), causal,
                        want_hidden) for s, e in zip(cuts, cuts[1:])]
            rows.append(torch.cat([o[0] for o in outs], dim=1))
            if want_hidden:
                row_hidden.append([torch.cat(layer, dim=1) for layer in zip(*(o[1] for o in outs))])
        hidden = [torch.cat(layer, dim=0) for layer in zip(*row_hidden)] if want_hidden else None
        return torch.cat(rows, dim=0), hidden


class _WithHead(TinyLMPreTrainedModel):
    """The body under `model` and tinylm's output head: a tied linear decoder (gpt, mlstm), or
    for bert the MLM head (modeling_tinylm_bert.head) and a tied decoder with a bias."""

    if _TRANSFORMERS_MAJOR >= 5:
        _tied_weights_keys = {"lm_head.weight": "model.tok_emb.weight"}
    else:
        _tied_weights_keys = ["lm_head.weight"]

    def _build(self, config: TinyLMConfig):
        self.model = TinyLMModel(config)
        if config.family == "bert":
            build_bert_head(self, config)
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=True)
        else:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def logits(self, hidden):
        if self.config.family == "bert":
            hidden = bert_head(self, hidden)
        return self.lm_head(hidden)

    def get_input_embeddings(self):
        return self.model.tok_emb

    def set_input_embeddings(self, value):
        self.model.tok_emb = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value


class TinyLMForCausalLM(_WithHead, GenerationMixin):
    """AutoModelForCausalLM: logits (B, T, V); loss when labels are given (shifted inside)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        self._build(config)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_hidden_states=None, return_dict=None, doc_ids=None, **kwargs):
        T = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if (self.config.family == "gpt" and T > self.config.max_seq_len and position_ids is None and doc_ids is None
                and cache is None):
            logits, hidden_states = self._sliding_window_logits(input_ids, attention_mask, inputs_embeds), None
        else:
            if cache is None and kwargs.get("use_cache") and self.config.family == "gpt":
                from transformers import DynamicCache

                cache = DynamicCache()
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states, causal=True,
                             doc_ids=doc_ids, cache=cache)
            logits, hidden_states = self.logits(out.last_hidden_state), out.hidden_states
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            if attention_mask is not None:
                shift_labels = shift_labels.masked_fill(attention_mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden_states,
                                      **({CACHE_KEY: cache} if cache is not None else {}))

    def _sliding_window_logits(self, input_ids, attention_mask, inputs_embeds):
        """Logits of a text longer than the GPT's position table (max_seq_len = W): windows of W
        tokens every W // 2, each position's logits taken from the first window that reaches it, so
        every token after the first window sees at least W // 2 tokens of context. tinylm.eval scores
        long texts with the same windows, so both give the same log-probabilities."""
        W = self.config.max_seq_len
        stride = max(W // 2, 1)
        T = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        chunks, begin, done = [], 0, 0
        while done < T:
            end = min(begin + W, T)
            out = self.model(input_ids=input_ids[:, begin:end] if input_ids is not None else None,
                             attention_mask=attention_mask[:, begin:end] if attention_mask is not None else None,
                             inputs_embeds=inputs_embeds[:, begin:end] if inputs_embeds is not None else None, causal=True)
            chunks.append(self.logits(out.last_hidden_state[:, done - begin :]))
            done, begin = end, begin + stride
        return torch.cat(chunks, dim=1)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        """gpt: the key/value cache holds what was read; only the new tokens go in. Once the
        max_seq_len positions are used up, each step rereads the newest max_seq_len tokens with a
        fresh cache (what the model without a cache sees). bert and mlstm: no cache, the whole
        window is recomputed at each step (the mLSTM has no position table and no length limit)."""
        ctx = self.config.max_seq_len
        cache = kwargs.get(CACHE_KEY)
        if self.config.family == "gpt" and cache is not None:
            past = cache.get_seq_length()
            if input_ids.shape[1] > ctx:
                from transformers import DynamicCache

                cache, past = DynamicCache(), 0
                input_ids = input_ids[:, -ctx:]
                attention_mask = attention_mask[:, -ctx:] if attention_mask is not None else None
            return {"input_ids": input_ids[:, past:], "attention_mask": attention_mask, CACHE_KEY: cache}
        if self.config.family != "mlstm":
            input_ids = input_ids[:, -ctx:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -ctx:]
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _supports_default_dynamic_cache(self):  # transformers >= 4.45: a DynamicCache for the gpt only
        return self.config.family == "gpt"


class TinyLMForMaskedLM(_WithHead):
    """AutoModelForMaskedLM (bert): bidirectional logits (B, T, V); with labels, the cross-entropy
    at the positions whose label is not -100 (no shift: shift the labels yourself for MNTP)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        if config.family != "bert":
            raise ValueError(f"AutoModelForMaskedLM needs a bidirectional model (bert); this export's family is "
                             f"{config.family!r}: use AutoModelForCausalLM")
        self._build(config)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_hidden_states=None, return_dict=None, doc_ids=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states, causal=False,
                         doc_ids=doc_ids)
        logits = self.logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
