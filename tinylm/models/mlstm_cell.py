"""The mLSTM cell of xLSTM (Beck et al. 2024) in three equivalent forms, in plain PyTorch.

This is what every device but a CUDA GPU runs, and the reference the Triton kernel (kernels/mlstm.py,
installed as tinylm.kernels.mlstm) is tested against; the layers around it are in tinylm.models.mlstm.
Shapes: B batch, H heads, T time (tokens), D head size, L chunk size, NC chunks.

The cell (per head, per token t; k is scaled by 1/sqrt(D)):

    i_t = exp(i~_t)                           exponential input gate (i~ a pre-activation)
    f_t = sigmoid(f~_t)  or  exp(f~_t)        forget gate (model.mlstm_forget_gate)
    C_t = f_t C_{t-1} + i_t k_t v_t^T         matrix memory (D x D; stored key-major here)
    n_t = f_t n_{t-1} + i_t k_t               normaliser
    h_t = C_t^T q_t / max(|n_t^T q_t|, 1)

Exponential gates overflow, so every form carries a stabiliser m_t = log of the largest gate
product so far and keeps C~ = C exp(-m), n~ = n exp(-m); the output then reads
h_t = C~_t^T q_t / max(|n~_t^T q_t|, exp(-m_t)), which is the same number for any choice of m.
All three forms below use the *same* m: the running maximum of the log gate products
log D_tj = sum_{s=j+1..t} log f_s + i~_j, starting from m_0 = -inf (the empty memory). That is
what `m_{t} = max(log f_t + m_{t-1}, i~_t)` gives recurrently and what the row maximum of the
log-gate matrix gives in parallel, so the forms agree to rounding.

The three forms (`mlstm_cell(..., form=...)`):
- parallel:   O(T^2) like attention: h = ((q k^T) * exp(log D - m)) v / normaliser;
- chunkwise:  O(T L): chunks of L tokens; inside a chunk the parallel form, across chunks the
              recurrent states (C~, n~, m) at chunk boundaries (the training default);
- recurrent:  one token at a time with state (generation; O(1) per token).

Documents: `seg` (B, T) segment ids (`segments(doc_ids)`): the memory (C, n, m) is reset wherever
the segment changes, so a packed row computes exactly what its documents would compute one by one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FORMS = ("parallel", "chunkwise", "recurrent")
FORGET_GATES = ("sigmoid", "exp")

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # C~ (B, H, D, D), n~ (B, H, D), m (B, H)


def log_forget_gate(f_pre: torch.Tensor, kind: str) -> torch.Tensor:
    """log f from the forget pre-activation: logsigmoid (<= 0, decays) or identity (exp gate)."""
    if kind == "sigmoid":
        return F.logsigmoid(f_pre)
    if kind == "exp":
        return f_pre
    raise ValueError(f"model.mlstm_forget_gate={kind!r} is not a forget gate; use one of {', '.join(FORGET_GATES)}")


def initial_state(B: int, H: int, D: int, dtype: torch.dtype, device) -> State:
    """The empty memory: C~ = 0, n~ = 0, m = -inf (no gate product yet); at least float32, so the
    memory accumulates in float32 under bf16 autocast."""
    dtype = torch.promote_types(dtype, torch.float32)
    return (torch.zeros(B, H, D, D, dtype=dtype, device=device), torch.zeros(B, H, D, dtype=dtype, device=device),
            torch.full((B, H), float("-inf"), dtype=dtype, device=device))


def segments(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) doc ids -> (B, T) segment index that grows by one wherever the doc id changes.
    Two positions share a segment iff no document starts between them (the reset semantics)."""
    starts = doc_ids[:, 1:] != doc_ids[:, :-1]
    return F.pad(starts.long().cumsum(1), (1, 0))


def _normalise(num: torch.Tensor, den: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """h = num / max(|den|, exp(-m)); num (..., D), den and m (...)."""
    return num / torch.maximum(den.abs(), torch.exp(-m))[..., None]


def mlstm_parallel(q, k, v, i_pre, log_f, seg=None) -> torch.Tensor:
    """Parallel (quadratic) form. q, k, v: (B, H, T, D); i_pre, log_f: (B, H, T); seg: (B, T) or None.
    Returns h: (B, H, T, D)."""
    B, H, T, D = q.shape
    k = k / math.sqrt(D)
    cum = log_f.cumsum(-1)  # (B, H, T): sum of log f up to and including t
    log_d = cum[..., :, None] - cum[..., None, :] + i_pre[..., None, :]  # (B, H, T, T): log D_tj
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if seg is not None:
        keep = keep & (seg[:, None, :, None] == seg[:, None, None, :])  # (B, 1, T, T)
    log_d = torch.where(keep, log_d, float("-inf"))
    m = log_d.amax(-1)  # (B, H, T): row-wise max stabiliser (the diagonal i~_t is always there)
    s = (q @ k.transpose(-2, -1)) * torch.exp(log_d - m[..., None])  # (B, H, T, T)
    return _normalise(s @ v, s.sum(-1), m)


def mlstm_step(q, k, v, i_pre, log_f, state: State) -> tuple[torch.Tensor, State]:
    """One recurrent step. q, k, v: (B, H, D); i_pre, log_f: (B, H). Returns h (B, H, D), state."""
    c, n, m = state
    k = k / math.sqrt(q.shape[-1])
    m_new = torch.maximum(log_f + m, i_pre)  # (B, H)
    f = torch.exp(log_f + m - m_new)  # stabilised forget gate (0 when m = -inf)
    i = torch.exp(i_pre - m_new)  # stabilised input gate
    c = f[..., None, None] * c + i[..., None, None] * (k[..., :, None] * v[..., None, :])  # (B, H, D, D)
    n = f[..., None] * n + i[..., None] * k  # (B, H, D)
    num = (q[..., None, :] @ c).squeeze(-2)  # (B, H, D): C~^T q
    return _normalise(num, (q * n).sum(-1), m_new), (c, n, m_new)


def mlstm_recurrent(q, k, v, i_pre, log_f, state: State | None = None, seg=None) -> tuple[torch.Tensor, State]:
    """Recurrent form over a sequence, token by token. Shapes as mlstm_parallel; returns (h, state)."""
    B, H, T, D = q.shape
    if state is None:
        state = initial_state(B, H, D, q.dtype, q.device)
    empty = initial_state(B, H, D, q.dtype, q.device)
    hs = []
    for t in range(T):
        if seg is not None and t > 0:  # a document starts here: forget everything before it
            reset = (seg[:, t] != seg[:, t - 1])[:, None]  # (B, 1)
            state = tuple(torch.where(reset.view(B, 1, *[1] * (s.dim() - 2)), e, s) for s, e in zip(state, empty))
        h, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_pre[:, :, t], log_f[:, :, t], state)
        hs.append(h)
    return torch.stack(hs, dim=2), state


def mlstm_chunkwise(q, k, v, i_pre, log_f, chunk_size: int = 64, state: State | None = None,
                    seg=None) -> tuple[torch.Tensor, State]:
    """Chunkwise form: parallel inside chunks of L tokens, recurrent across them. Shapes as
    mlstm_parallel; `state` continues an earlier call; returns (h, state after the last token).

    T need not be a multiple of L: the tail is padded with tokens whose input gate is exp(-inf) = 0
    and whose forget gate is 1, which leave every state, and hence every real output, unchanged."""
    B, H, T, D = q.shape
    L = max(1, min(chunk_size, T))
    pad = (-T) % L
    NC = (T + pad) // L
    if state is None:
        state = initial_state(B, H, D, q.dtype, q.device)
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        i_pre = F.pad(i_pre, (0, pad), value=float("-inf"))
        log_f = F.pad(log_f, (0, pad), value=0.0)
        if seg is not None:
            seg = torch.cat([seg, seg[:, -1:].expand(B, pad)], dim=1)
    k = k / math.sqrt(D)
    q, k, v = (x.reshape(B, H, NC, L, D) for x in (q, k, v))
    i_pre, log_f = i_pre.reshape(B, H, NC, L), log_f.reshape(B, H, NC, L)
    ninf = float("-inf")

    b = log_f.cumsum(-1)  # (B, H, NC, L): log forget product from the chunk start to s
    b_last = b[..., -1]  # (B, H, NC)
    log_d = b[..., :, None] - b[..., None, :] + i_pre[..., None, :]  # (B, H, NC, L, L) intra-chunk
    keep = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    a = b_last[..., None] - b + i_pre  # (B, H, NC, L): log weight of token j in the state at chunk end
    carry_in_state = None
    if seg is not None:
        seg_c = seg.reshape(B, 1, NC, L)
        # the segment the carried state belongs to, per chunk: that of the previous chunk's last
        # token (for the first chunk: the first token's, i.e. no reset at position 0)
        seg_prev = torch.cat([seg_c[:, :, :1, 0], seg_c[:, :, :-1, -1]], dim=2)  # (B, 1, NC)
        keep = keep & (seg_c[..., :, None] == seg_c[..., None, :])  # (B, 1, NC, L, L)
        a = a.masked_fill(seg_c != seg_c[..., -1:], ninf)
        carry_in_state = seg_c[..., -1] == seg_prev  # (B, 1, NC): no reset inside the chunk
        carry_in_row = seg_c == seg_prev[..., None]  # (B, 1, NC, L): no reset up to row s
    log_d = torch.where(keep, log_d, ninf)

    # Each chunk's own contribution to the state at its end, stabilised by its own maximum.
    m_chunk = a.amax(-1)  # (B, H, NC); finite: the chunk's last real token always counts
    kw = k * torch.exp(a - m_chunk[..., None])[..., None]  # (B, H, NC, L, D): keys weighted
    c_chunk = kw.transpose(-2, -1) @ v  # (B, H, NC, D, D)
    n_chunk = kw.sum(-2)  # (B, H, NC, D)

    # Recurrence across chunks: the state entering each chunk (elementwise work only).
    c, n, m = state
    cs, ns, ms = [], [], []
    for j in range(NC):
        cs.append(c), ns.append(n), ms.append(m)
        g = b_last[:, :, j] + m  # (B, H): log weight of the carried state at the chunk end
        if carry_in_state is not None:
            g = torch.where(carry_in_state[:, :, j], g, ninf)
        m_new = torch.maximum(g, m_chunk[:, :, j])
        scale_old, scale_new = torch.exp(g - m_new), torch.exp(m_chunk[:, :, j] - m_new)
        c = scale_old[..., None, None] * c + scale_new[..., None, None] * c_chunk[:, :, j]
        n = scale_old[..., None] * n + scale_new[..., None] * n_chunk[:, :, j]
        m = m_new
    c_prev, n_prev, m_prev = torch.stack(cs, 2), torch.stack(ns, 2), torch.stack(ms, 2)  # (B, H, NC, ...)

    # Outputs of all chunks at once: the carried state plus the intra-chunk parallel form.
    g = b + m_prev[..., None]  # (B, H, NC, L): log weight of the carried state at row s
    if seg is not None:
        g = g.masked_fill(~carry_in_row, ninf)
    m_row = torch.maximum(g, log_d.amax(-1))  # (B, H, NC, L)
    s = (q @ k.transpose(-2, -1)) * torch.exp(log_d - m_row[..., None])  # (B, H, NC, L, L)
    carry = torch.exp(g - m_row)  # (B, H, NC, L)
    num = s @ v + carry[..., None] * (q @ c_prev)  # (B, H, NC, L, D)
    den = s.sum(-1) + carry * (q * n_prev[..., None, :]).sum(-1)  # (B, H, NC, L)
    h = _normalise(num, den, m_row).reshape(B, H, NC * L, D)[:, :, :T]
    return h, (c, n, m)


def mlstm_cell(q, k, v, i_pre, f_pre, form: str = "chunkwise", forget_gate: str = "sigmoid",
               chunk_size: int = 64, state: State | None = None, seg=None) -> tuple[torch.Tensor, State | None]:
    """The mLSTM cell in any form. q, k, v: (B, H, T, D); i_pre, f_pre: (B, H, T) gate
    pre-activations; seg: (B, T) segment ids (see `segments`) or None. Returns (h (B, H, T, D),
    final state, or None for the parallel form, which neither takes nor returns state)."""
    log_f = log_forget_gate(f_pre, forget_gate)
    if form == "parallel":
        if state is not None:
            raise ValueError("the parallel mLSTM form takes no state; use chunkwise or recurrent")
        return mlstm_parallel(q, k, v, i_pre, log_f, seg), None
    if form == "chunkwise":
        return mlstm_chunkwise(q, k, v, i_pre, log_f, chunk_size, state, seg)
    if form == "recurrent":
        return mlstm_recurrent(q, k, v, i_pre, log_f, state, seg)
    raise ValueError(f"mLSTM form {form!r} is not a form; use one of {', '.join(FORMS)}")
