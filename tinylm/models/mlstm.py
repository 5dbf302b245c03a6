"""mLSTM: the matrix-memory LSTM of xLSTM (Beck et al. 2024) as a causal language model.

Shapes: B batch, T time (tokens), C = d_model channels, E = inner width of a block
(mlstm_proj_factor * C), H heads, D = E // H head size, V vocabulary, L chunk size, NC chunks.

The cell's equations, its stabiliser and its three forms (parallel, chunkwise, recurrent) are in
tinylm.models.mlstm_cell; this module builds the layers around it.

The paper's sigmoid output gate o_t is, in the pre-up-projection block used here (xLSTM Fig. 10),
the SiLU of the block's second branch: h = (norm(h_cell) + skip * conv(x)) * silu(z).

Documents: `doc_ids` (B, T) are honoured: the memory (C, n, m), the conv window and the sliding-
window attention are reset / masked at every position whose doc id differs from the previous one,
so a packed row computes exactly what its documents would compute one by one.

`model.max_seq_len` is only the bound the training loop checks `train.seq_len` against: the model
has no position table, so forward and generate accept any length.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models.layers import MLP, LayerNorm, SelfAttention, decay_groups, sample_next_token
from tinylm.models.mlstm_cell import FORGET_GATES, FORMS, segments


# --------------------------------------------------------------------------------------------------
# the blocks


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map (xLSTM's LinearHeadwiseExpand): E features in blocks of `size`,
    each block mixed by its own (size x size) matrix; far fewer parameters than a dense map."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.empty(dim // size, size, size))  # (E/size, out, in)
        nn.init.normal_(self.weight, std=math.sqrt(2 / (5 * size)))  # xLSTM's small_init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, E = x.shape
        x = x.view(*lead, E // self.size, self.size)
        return torch.einsum("...ni,noi->...no", x, self.weight).reshape(*lead, E)


def causal_conv(x, weight, bias, past=None, seg=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv. x: (B, T, E); weight: (E, K), column K-1 multiplies the current token;
    past: (B, K-1, E) earlier inputs (zeros at the start); seg masks taps across documents.
    Returns (y (B, T, E), the last K-1 inputs for the next call)."""
    B, T, E = x.shape
    K = weight.shape[1]
    if past is None:
        past = x.new_zeros(B, K - 1, E)
    xp = torch.cat([past, x], dim=1)  # (B, K-1+T, E)
    y = bias.expand(B, T, E)
    for j in range(K):
        tap = xp[:, j : j + T]  # x_{t - (K-1-j)}
        lag = K - 1 - j
        if seg is not None and 0 < lag < T:
            same = torch.ones(B, T, dtype=torch.bool, device=x.device)
            same[:, lag:] = seg[:, lag:] == seg[:, :-lag]  # same document as t (before t: zero padding)
            tap = tap * same[..., None]
        y = y + weight[:, j] * tap
    return y, xp[:, xp.shape[1] - (K - 1) :]


class MLSTMLayer(nn.Module):
    """The pre-up-projection mLSTM layer (xLSTM Fig. 10), applied to the normalised residual stream:

        x -> up -> (x_m, z);  c = silu(conv(x_m));  q, k = proj(c);  v = proj(x_m)
        h = multihead_norm(cell(q, k, v)) + skip * c;  y = down(h * silu(z))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, H = cfg.d_model, cfg.n_head
        E = round(cfg.mlstm_proj_factor * d)
        bs = cfg.mlstm_qkv_blocksize
        if E % H:
            raise ValueError(f"mLSTM inner width {E} (mlstm_proj_factor * d_model) must be divisible by model.n_head={H}")
        if bs and E % bs:
            raise ValueError(f"mLSTM inner width {E} must be divisible by model.mlstm_qkv_blocksize={bs}")
        if cfg.mlstm_conv_kernel < 1:
            raise ValueError("model.mlstm_conv_kernel must be >= 1")
        self.E, self.H, self.cfg = E, H, cfg
        self.up = nn.Linear(d, 2 * E, bias=cfg.bias)
        K = cfg.mlstm_conv_kernel
        self.conv_weight = nn.Parameter(torch.empty(E, K).uniform_(-1 / math.sqrt(K), 1 / math.sqrt(K)))
        self.conv_bias = nn.Parameter(torch.zeros(E))
        make = (lambda: HeadwiseLinear(E, bs)) if bs else (lambda: nn.Linear(E, E, bias=cfg.bias))
        self.q, self.k, self.v = make(), make(), make()
        # Gate pre-activations from (q, k, v), one per head (xLSTM): zero weights; forget biases
        # spread over [3, 6] (long memory at init), input biases small.
        self.gates = nn.Linear(3 * E, 2 * H)  # (input | forget) pre-activations
        self.norm_weight = nn.Parameter(torch.ones(E))  # multi-head layer norm gain (per head norm)
        self.skip = nn.Parameter(torch.ones(E))  # learnable skip of the conv branch
        self.down = nn.Linear(E, d, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def reset_gates(self) -> None:
        nn.init.zeros_(self.gates.weight)
        with torch.no_grad():
            nn.init.normal_(self.gates.bias[: self.H], std=0.1)
            self.gates.bias[self.H :] = torch.linspace(3.0, 6.0, self.H)

    def forward(self, x, seg=None, form="chunkwise", chunk_size=64, state=None):
        """x: (B, T, C) -> (B, T, C), state {conv, cell} (None for the parallel form)."""
        B, T, _ = x.shape
        E, H, D = self.E, self.H, self.E // self.H
        x_m, z = self.up(x).chunk(2, dim=-1)  # (B, T, E) each
        conv_out, conv_state = causal_conv(x_m, self.conv_weight, self.conv_bias, None if state is None else state["conv"], seg)
        c = F.silu(conv_out)  # (B, T, E)
        q, k, v = self.q(c), self.k(c), self.v(x_m)  # (B, T, E)
        qkv = torch.cat([q, k, v], dim=-1)  # (B, T, 3E)
        gates = self.gates(qkv)  # (B, T, 2H)
        gates = gates.to(torch.promote_types(gates.dtype, torch.float32))  # at least float32 (bf16 autocast)
        i_pre, f_pre = gates.transpose(1, 2).chunk(2, dim=1)  # (B, H, T) each
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        # through tinylm.ops: the Triton chunkwise kernel on CUDA, this module's forms otherwise
        h, cell_state = ops.mlstm_cell(q, k, v, i_pre, f_pre, form, self.cfg.mlstm_forget_gate, chunk_size,
                                       None if state is None else state["cell"], seg)
        h = h.transpose(1, 2)  # (B, T, H, D)
        h = ops.layer_norm(h, None, None, self.cfg.norm_eps).reshape(B, T, E) * self.norm_weight  # per-head norm
        h = (h + self.skip * c) * F.silu(z)  # output gate: SiLU of the other branch
        y = self.dropout(self.down(h))
        return y, (None if cell_state is None else {"conv": conv_state, "cell": cell_state})


class MLSTMBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.mlstm = MLSTMLayer(cfg)

    def forward(self, x, seg=None, form="chunkwise", chunk_size=64, state=None):
        y, state = self.mlstm(self.ln(x), seg, form, chunk_size, state)
        return x + y, state


class WindowAttention(SelfAttention):
    """Causal multi-head attention over the last `window` tokens (the query itself included).

    When the window covers the whole sequence this is plain causal attention through
    tinylm.ops.attention (Triton on CUDA). Otherwise it needs a banded mask, which ops.attention
    does not take, so it uses torch's scaled_dot_product_attention with an explicit (T, S) boolean
    band mask: O(T^2) memory, fine for the short training windows this is meant for.
    For generation it keeps the last window-1 keys and values (O(window) per token).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.d_model, cfg.n_head, cfg.bias, cfg.dropout, causal=True)  # qkv, proj, dropout
        self.window = cfg.mlstm_swa_window

    def forward(self, x, seg=None, cache=None, want_cache=False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        past = 0
        if cache is not None:
            past = cache["k"].shape[2]
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)  # (B, H, S, Dh)
        if past == 0 and T <= self.window:
            y = ops.attention(q, k, v, causal=True, doc_ids=seg)
        else:
            qi = torch.arange(T, device=x.device)[:, None] + past
            kj = torch.arange(past + T, device=x.device)[None, :]
            mask = (kj <= qi) & (qi - kj < self.window)  # (T, S) band
            if seg is not None:  # seg is only given without a cache (S == T)
                mask = mask & (seg[:, None, :, None] == seg[:, None, None, :])  # (B, 1, T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = self.dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        new_cache = None
        if want_cache:
            keep = k.shape[2] - min(k.shape[2], self.window - 1)
            new_cache = {"k": k[:, :, keep:], "v": v[:, :, keep:]}
        return y, new_cache


class WindowAttentionBlock(nn.Module):
    """A pre-LN transformer block with sliding-window attention (BLaLM's attention mix)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.attn = WindowAttention(cfg)
        self.ln_mlp = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.d_ff or 4 * cfg.d_model, cfg.bias, cfg.dropout)

    def forward(self, x, seg=None, form="chunkwise", chunk_size=64, state=None):
        y, cache = self.attn(self.ln_attn(x), seg, state, want_cache=form != "parallel")
        x = x + y
        return x + self.mlp(self.ln_mlp(x)), cache


# --------------------------------------------------------------------------------------------------
# the model


class MLSTM(nn.Module):
    """Embeddings -> residual stack of mLSTM blocks (optionally every k-th a sliding-window
    attention block) -> final LayerNorm -> tied head. No position embeddings: the recurrence
    (and the conv) carry order."""

    causal = True  # generation and causal scoring apply

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it is taken from the tokenizer at launch)")
        if cfg.mlstm_form not in FORMS:
            raise ValueError(f"model.mlstm_form={cfg.mlstm_form!r} is not a form; use one of {', '.join(FORMS)}")
        if cfg.mlstm_forget_gate not in FORGET_GATES:
            raise ValueError(f"model.mlstm_forget_gate={cfg.mlstm_forget_gate!r} is not a forget gate; "
                             f"use one of {', '.join(FORGET_GATES)}")
        if cfg.mlstm_chunk_size < 1:
            raise ValueError("model.mlstm_chunk_size must be >= 1")
        if cfg.mlstm_swa_every == 1 or cfg.mlstm_swa_every < 0:
            raise ValueError("model.mlstm_swa_every must be 0 (no attention) or >= 2 (every k-th block): "
                             "the attention blocks have no positions of their own and need mLSTM blocks before them")
        if cfg.mlstm_swa_every and cfg.mlstm_swa_window < 1:
            raise ValueError("model.mlstm_swa_window must be >= 1")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        k = cfg.mlstm_swa_every
        self.blocks = nn.ModuleList(
            WindowAttentionBlock(cfg) if k and (i + 1) % k == 0 else MLSTMBlock(cfg) for i in range(cfg.n_layer)
        )
        self.ln_out = LayerNorm(cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for module in self.modules():  # as GPT: every linear and embedding N(0, init_std), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for module in self.modules():  # then xLSTM's choices for the mLSTM layer
            if isinstance(module, MLSTMLayer):
                if not isinstance(module.q, HeadwiseLinear):  # dense q/k/v: small_init sqrt(2 / (5 fan_in))
                    for lin in (module.q, module.k, module.v):
                        nn.init.normal_(lin.weight, std=math.sqrt(2 / (5 * module.E)))
                module.reset_gates()
        # residual projections scaled by 1/sqrt(2 * n_layer), as in GPT-2
        for name, p in self.named_parameters():
            if name.endswith(("down.weight", "proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layer))

    def _run(self, input_ids, doc_ids=None, form=None, chunk_size=None, state=None, want_state=False):
        """input_ids (B, T) -> logits (B, T, V) and the per-block states after the last token."""
        form = form or self.cfg.mlstm_form
        chunk_size = chunk_size or self.cfg.mlstm_chunk_size
        if form not in FORMS:
            raise ValueError(f"mLSTM form {form!r} is not a form; use one of {', '.join(FORMS)}")
        if (state is not None or want_state) and form == "parallel":
            raise ValueError("the parallel mLSTM form keeps no state; use chunkwise or recurrent")
        if state is not None and doc_ids is not None:
            raise ValueError("doc_ids are not supported together with a carried state")
        seg = None if doc_ids is None else segments(doc_ids)
        x = self.dropout(self.tok_emb(input_ids))  # (B, T, C)
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, seg, form, chunk_size, None if state is None else state[i])
            states.append(s)
        return self.head(self.ln_out(x)), (states if want_state else None)

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None, *,
                form: str | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """input_ids: (B, T) -> logits (B, T, V). doc_ids (B, T) resets the memory at document
        starts. form / chunk_size override model.mlstm_form / model.mlstm_chunk_size."""
        return self._run(input_ids, doc_ids, form, chunk_size)[0]

    # ----------------------------------------------------------------------------------------------

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(self, weight_decay)

    def num_params(self, non_embedding: bool = True) -> int:
        """All parameters. As for GPT, `non_embedding` leaves out position embeddings only (the
        tied token embedding is also the output head); the mLSTM has none, so both counts agree."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6N for the parameter matmuls
        plus the token mixing of each layer. Per mLSTM head and token the forward does the intra-
        chunk scores and their product with v (2 * 2 * L * D, L the chunk, or T for the parallel
        form) plus the state read-out and the state update (2 * 2 * D * D); per attention head
        2 * 2 * min(window, T) * Dh."""
        cfg = self.cfg
        n_mlstm = sum(isinstance(b, MLSTMBlock) for b in self.blocks)
        n_attn = len(self.blocks) - n_mlstm
        H = cfg.n_head
        D = round(cfg.mlstm_proj_factor * cfg.d_model) // H
        L = {"parallel": seq_len, "chunkwise": min(cfg.mlstm_chunk_size, seq_len), "recurrent": 0}[cfg.mlstm_form]
        mix = n_mlstm * H * 12 * (L * D + D * D)
        mix += n_attn * H * 12 * min(cfg.mlstm_swa_window, seq_len) * (cfg.d_model // H)
        return 6 * self.num_params() + mix

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
        """Sample continuations of (B, T) prompts; stops early when every row produced eos_id.
        The prompt is read once by the chunkwise form; each new token is then one recurrent step
        from the carried states (O(1) per token for mLSTM blocks, O(window) for attention blocks)."""
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if max_new_tokens <= 0:
            return input_ids
        logits, state = self._run(input_ids, form="chunkwise", want_state=True)
        for step in range(max_new_tokens):
            logits = logits[:, -1, :].float()  # (B, V)
            next_id = sample_next_token(logits, temperature, top_k, generator)
            input_ids = torch.cat([input_ids, next_id], dim=1)
            if eos_id is not None:
                done |= next_id.squeeze(1) == eos_id
                if bool(done.all()):
                    break
            if step + 1 < max_new_tokens:
                logits, state = self._run(next_id, form="recurrent", state=state, want_state=True)
        return input_ids
