"""FlashAttention (forward + backward) in Triton, with causal, key-padding and document masks.

Forward (one program per BLOCK_M query rows of one (batch, head)): stream over key blocks of
BLOCK_N keys, keeping the running row max m, the running softmax denominator l and the unnormalised
output acc in registers (online softmax, in base 2: exp2 is what the hardware computes). The
(T, T) score matrix never exists in memory. The kernel stores O and the per-row log-sum-exp
LSE = m + log2(l) (base 2, fp32); the backward recomputes P = exp2(S - LSE) from it.

Backward (FlashAttention-2 split, no atomics):
  1. delta = rowsum(O * dO) (fp32), so that dS = P * (dP - delta);
  2. one program per key block accumulates dK = sum dS^T Q and dV = sum P^T dO over query blocks;
  3. one program per query block accumulates dQ = sum dS K over key blocks.

Masks. Key j is visible to query i iff j < T, (not causal or j <= i), key_padding_mask[b, j] and
doc_ids[b, i] == doc_ids[b, j]. Each program visits a contiguous range of blocks, computed from:
  - causal: key blocks entirely above the diagonal are never visited; blocks entirely below it run
    without building a mask (a separate loop stage), only the diagonal blocks pay for one;
  - padding / documents ("span" rule): the launcher precomputes, for every query i, the span
    [first, last] of the real keys with doc_ids == doc_ids[i] (and for every real key, the span of
    queries with its doc id) with a sort + searchsorted, O(T log T), no host sync. A query block
    visits only the key blocks that meet the union of its rows' spans (and symmetrically for the
    dK/dV program of a key block). Spans contain every visible key by construction, so this is
    exact for any doc_ids; it skips the most for packed sequences (ids contiguous along the row:
    a block visits only its own documents) and for left/right padding (fully padded blocks at the
    ends). Interleaved ids or padding in the middle of a row are still correct, only not skipped.
    The element-wise padding/doc mask is applied inside the visited blocks.
Visiting a contiguous range keeps the loops free of data-dependent branches, so Triton software-
pipelines the K/V loads in every variant.

A query row that sees no key at all (e.g. a left-padded row under a causal mask) gets l = 0: its
output is 0 and its LSE is +inf, so the backward's exp2(S - LSE) is 0 and it receives, and passes
on, zero gradient.

doc_ids must fit in int32.

The host side (autotune tables, launchers, autograd, `flash_attention`) is tinylm.kernels.attention.
"""

from __future__ import annotations

import triton
import triton.language as tl


# --------------------------------------------------------------------------------------------------
# helpers


@triton.jit
def _load_tile(ptrs, row_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Load a (rows, BLOCK_D) tile; rows past T and columns past HEAD_DIM read as 0."""
    if BLOCK_D == HEAD_DIM:
        x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    else:
        x = tl.load(ptrs, mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    return x


@triton.jit
def _store_tile(ptrs, x, row_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    if BLOCK_D == HEAD_DIM:
        tl.store(ptrs, x, mask=row_ok[:, None])
    else:
        tl.store(ptrs, x, mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _span(SPAN_LO, SPAN_HI, offs, T):
    """Union [lo, hi) of the precomputed spans of the rows `offs` (< T); lo >= hi if empty."""
    ok = offs < T
    lo = tl.min(tl.load(SPAN_LO + offs, mask=ok, other=T), axis=0)
    hi = tl.max(tl.load(SPAN_HI + offs, mask=ok, other=-1), axis=0) + 1
    return lo, hi


@triton.jit
def _pair_mask(offs_m, offs_n, KPM, DOC, qdoc, T, MASK_CAUSAL: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr):
    """Visibility of (query offs_m, key offs_n) pairs, shaped (BLOCK_M, BLOCK_N) or broadcastable
    to it: key in bounds, real, causal, same document."""
    key_ok = offs_n < T  # (BLOCK_N,)
    if HAS_KPM:
        key_ok = key_ok & (tl.load(KPM + offs_n, mask=offs_n < T, other=0) != 0)
    mask = key_ok[None, :]
    if MASK_CAUSAL:
        mask = mask & (offs_m[:, None] >= offs_n[None, :])
    if HAS_DOC:
        kdoc = tl.load(DOC + offs_n, mask=offs_n < T, other=0)
        mask = mask & (qdoc[:, None] == kdoc[None, :])
    return mask


# --------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
    offs_m, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_DOC: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online-softmax update of (acc, l_i, m_i) with the key blocks starting in [lo, hi)."""
    # With any mask a row may have seen no key yet (m = -inf), which needs guarding below.
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or MASK_BOUNDS or HAS_KPM or HAS_DOC
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)  # (BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        if APPLY_MASK:
            mask = _pair_mask(offs_m, offs_n, KPM, DOC, qdoc, T, MASK_CAUSAL, HAS_KPM,
                              HAS_DOC)
            s = tl.where(mask, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # A row with nothing visible so far keeps m = -inf; shift it by 0 instead so that
            # exp2(-inf - (-inf)) never produces NaN (its p and alpha are then exactly 0).
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_use = m_new
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)  # rescales what was accumulated under the old max
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, KPM, DOC, KSPAN_LO, KSPAN_HI,
    # Q, K, V, O: (B, H, T, D) strided; LSE: (B*H, T) fp32; KPM (int8), DOC (int32): (B, T);
    # KSPAN_LO/HI (B, T) int32: per query, first/last visible key (only with KPM or DOC)
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H, T, T_BUCKET, qk_scale,  # qk_scale = scale * log2(e); T_BUCKET: autotune key only
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    KPM += b * T
    DOC += b * T
    KSPAN_LO += b * T
    KSPAN_HI += b * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                   BLOCK_D)  # (BLOCK_M, BLOCK_D)
    if HAS_DOC:
        qdoc = tl.load(DOC + offs_m, mask=m_ok, other=0)
    else:
        qdoc = offs_m  # unused

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    # Key blocks [lo, mid) need no causal or bounds mask, [mid, hi) do.
    if IS_CAUSAL:
        full_hi = (start_m // BLOCK_N) * BLOCK_N  # blocks ending at or before start_m
        hi = tl.minimum(start_m + BLOCK_M, T)  # later blocks are above the diagonal
    else:
        full_hi = (T // BLOCK_N) * BLOCK_N  # blocks fully inside [0, T)
        hi = T
    lo = 0
    if HAS_KPM or HAS_DOC:
        span_lo, span_hi = _span(KSPAN_LO, KSPAN_HI, offs_m, T)
        lo = (span_lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum(hi, span_hi)
    mid = tl.minimum(tl.maximum(full_hi, lo), hi)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
        offs_m, offs_d, lo, mid, T, qk_scale,
        False, False, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
        offs_m, offs_d, mid, hi, T, qk_scale,
        IS_CAUSAL, True, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )

    empty = l_i == 0.0  # rows that saw no key: output 0, LSE +inf (=> zero grads)
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    _store_tile(O + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty), m_ok,
                offs_d, HEAD_DIM, BLOCK_D)
    tl.store(LSE + pid_bh * T + offs_m, lse, mask=m_ok)


# --------------------------------------------------------------------------------------------------
# backward


@triton.jit
def _bwd_delta_kernel(
    O, DO, Delta,  # O, DO: (B, H, T, D) strided; Delta: (B*H, T) fp32
    stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
    H, T,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    o = _load_tile(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot
                   + offs_d[None, :], m_ok, offs_d, HEAD_DIM, BLOCK_D).to(tl.float32)
    do = _load_tile(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot
                    + offs_d[None, :], m_ok, offs_d, HEAD_DIM, BLOCK_D).to(tl.float32)
    tl.store(Delta + pid_bh * T + offs_m, tl.sum(o * do, axis=1), mask=m_ok)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v, Q, DO, LSE, Delta, KPM, DOC, stride_qt, stride_dot,
    offs_n, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Accumulate dK, dV of one key block over the query blocks starting in [lo, hi).

    Works in the transposed (keys x queries) orientation so that dK, dV come out of tl.dot
    directly. Query rows >= T load as zeros (q = dO = delta = 0, LSE = 0), which makes their
    contribution exactly 0, so no bounds mask is needed; keys >= T are this program's own padding
    rows, never stored.
    """
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or HAS_KPM or HAS_DOC
    if HAS_DOC:
        kdoc = tl.load(DOC + offs_n, mask=offs_n < T, other=0)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < T
        q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d,
                       HEAD_DIM, BLOCK_D)  # (BLOCK_M, BLOCK_D)
        lse = tl.load(LSE + offs_m, mask=m_ok, other=0.0)
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        pT = tl.exp2(sT - lse[None, :])
        if APPLY_MASK:
            maskT = offs_n[:, None] < T
            if HAS_KPM:
                kpm = tl.load(KPM + offs_n, mask=offs_n < T, other=0)
                maskT = maskT & (kpm != 0)[:, None]
            if MASK_CAUSAL:
                maskT = maskT & (offs_m[None, :] >= offs_n[:, None])
            if HAS_DOC:
                qdoc = tl.load(DOC + offs_m, mask=m_ok, other=0)
                maskT = maskT & (kdoc[:, None] == qdoc[None, :])
            pT = tl.where(maskT, pT, 0.0)
        do = _load_tile(DO + offs_m[:, None] * stride_dot + offs_d[None, :], m_ok, offs_d,
                        HEAD_DIM, BLOCK_D)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)
        delta = tl.load(Delta + offs_m, mask=m_ok, other=0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, Delta, KPM, DOC, QSPAN_LO, QSPAN_HI,
    # DK, DV: (B, H, T, D); QSPAN_LO/HI (B, T) int32: per key, first/last query that sees it
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_gb, stride_gh, stride_gt,  # strides of DK and DV
    H, T, T_BUCKET, sm_scale, qk_scale,  # T_BUCKET: autotune key only
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += b * stride_gb + h * stride_gh
    DV += b * stride_gb + h * stride_gh
    LSE += pid_bh * T
    Delta += pid_bh * T
    KPM += b * T
    DOC += b * T
    QSPAN_LO += b * T
    QSPAN_HI += b * T

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < T
    k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], n_ok, offs_d, HEAD_DIM,
                   BLOCK_D)  # (BLOCK_N, BLOCK_D)
    v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], n_ok, offs_d, HEAD_DIM,
                   BLOCK_D)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    # Query blocks [lo, mid) need the causal mask, [mid, hi) do not.
    hi = tl.cdiv(T, BLOCK_M) * BLOCK_M
    if IS_CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M  # earlier query blocks see none of these keys
        # from the first block whose top row is >= the last key on, every query sees every key
        mid = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
    else:
        lo = 0
        mid = 0
    if HAS_KPM or HAS_DOC:
        span_lo, span_hi = _span(QSPAN_LO, QSPAN_HI, offs_n, T)
        lo = tl.maximum(lo, (span_lo // BLOCK_M) * BLOCK_M)
        hi = tl.minimum(hi, span_hi)
    mid = tl.minimum(tl.maximum(mid, lo), hi)
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, Q, DO, LSE, Delta, KPM, DOC, stride_qt, stride_dot,
        offs_n, offs_d, lo, mid, T, qk_scale,
        IS_CAUSAL, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_M, PRECISION,
    )
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, Q, DO, LSE, Delta, KPM, DOC, stride_qt, stride_dot,
        offs_n, offs_d, mid, hi, T, qk_scale,
        False, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_M, PRECISION,
    )
    dk = dk * sm_scale  # S = scale * Q K^T
    _store_tile(DK + offs_n[:, None] * stride_gt + offs_d[None, :], dk.to(DK.dtype.element_ty),
                n_ok, offs_d, HEAD_DIM, BLOCK_D)
    _store_tile(DV + offs_n[:, None] * stride_gt + offs_d[None, :], dv.to(DV.dtype.element_ty),
                n_ok, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse, delta, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
    offs_m, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_DOC: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Accumulate dQ of one query block over the key blocks starting in [lo, hi)."""
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or MASK_BOUNDS or HAS_KPM or HAS_DOC
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(s - lse[:, None])
        if APPLY_MASK:
            mask = _pair_mask(offs_m, offs_n, KPM, DOC, qdoc, T, MASK_CAUSAL, HAS_KPM,
                              HAS_DOC)
            p = tl.where(mask, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, Delta, KPM, DOC, KSPAN_LO, KSPAN_HI,  # DQ: (B, H, T, D)
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_gb, stride_gh, stride_gt,  # strides of DQ
    H, T, T_BUCKET, sm_scale, qk_scale,  # T_BUCKET: autotune key only
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DQ += b * stride_gb + h * stride_gh
    KPM += b * T
    DOC += b * T
    KSPAN_LO += b * T
    KSPAN_HI += b * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                   BLOCK_D)  # (BLOCK_M, BLOCK_D)
    do = _load_tile(DO + offs_m[:, None] * stride_dot + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                    BLOCK_D)
    lse = tl.load(LSE + pid_bh * T + offs_m, mask=m_ok, other=0.0)
    delta = tl.load(Delta + pid_bh * T + offs_m, mask=m_ok, other=0.0)
    if HAS_DOC:
        qdoc = tl.load(DOC + offs_m, mask=m_ok, other=0)
    else:
        qdoc = offs_m  # unused
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    # Same block ranges as the forward.
    if IS_CAUSAL:
        full_hi = (start_m // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M, T)
    else:
        full_hi = (T // BLOCK_N) * BLOCK_N
        hi = T
    lo = 0
    if HAS_KPM or HAS_DOC:
        span_lo, span_hi = _span(KSPAN_LO, KSPAN_HI, offs_m, T)
        lo = (span_lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum(hi, span_hi)
    mid = tl.minimum(tl.maximum(full_hi, lo), hi)
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
        offs_m, offs_d, lo, mid, T, qk_scale,
        False, False, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, qdoc, K, V, KPM, DOC, stride_kt, stride_vt,
        offs_m, offs_d, mid, hi, T, qk_scale,
        IS_CAUSAL, True, HAS_KPM, HAS_DOC, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    dq = dq * sm_scale
    _store_tile(DQ + offs_m[:, None] * stride_gt + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                m_ok, offs_d, HEAD_DIM, BLOCK_D)
