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
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_LOG2E = 1.4426950408889634


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


# --------------------------------------------------------------------------------------------------
# autotuning and launchers

# T_BUCKET = next_power_of_2(T) (an otherwise unused argument): a new sequence length re-tunes
# only when it changes bucket.
_KEY = ["T_BUCKET", "HEAD_DIM", "IS_CAUSAL", "HAS_KPM", "HAS_DOC", "PRECISION"]


def mask_name(is_causal: bool, has_kpm: bool, has_doc: bool) -> str:
    """The mask combination of a launch, as the config tables below and tinylm.kernels.aot name it."""
    parts = [n for n, on in (("causal", is_causal), ("pad", has_kpm), ("doc", has_doc)) if on]
    return "+".join(parts) or "none"


def _autotuned(kernel, cpu, gpu, key=_KEY, spills=None):
    """Autotune `kernel` over the GPU configs of its class; one fixed config under the interpreter
    (which cannot autotune). `key`: the argument names a new tuning depends on.

    gpu: {"d64" | "d128" | "fp32": [(BLOCK_M, BLOCK_N, num_warps, num_stages), ...]}, BLOCK_M =
    queries and BLOCK_N = keys in every kernel: 16-bit inputs with head dim <= 64 (optionally
    "d32" for head dim <= 32 on its own), head dim 128 (fp32 accumulators twice as wide), fp32
    inputs (3xTF32 dots need more registers).
    spills: {class: {config: (mask names, ...)}}: the mask combinations for which that config
    spills registers on sm_80 or sm_90 (found by `make test-aot`); it is pruned for those only.
    ptxas's register allocation at ~255 registers is erratic (a smaller tile can spill where a
    larger one does not), so the tables record what the compiler did, not a rule. "auto" launches
    only the d32/d64 classes, whose every remaining config compiles spill-free on both architectures;
    d128 and fp32 (kernels=triton only) may spill. The interpreter blocks are small and unequal
    (BLOCK_M != BLOCK_N) so that the CPU tests cross block boundaries and cover the loop splits
    the GPU configs use.
    """
    if _INTERPRET:
        return triton.autotune([triton.Config(cpu, num_warps=4, num_stages=1)], key=key)(kernel)
    spills = spills or {}

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        head_dim = args.get("HEAD_DIM") or 64
        if args.get("PRECISION") != "tf32":
            cls = "fp32"
        elif head_dim > 64:
            cls = "d128"
        else:
            cls = "d32" if head_dim <= 32 and "d32" in gpu else "d64"
        mask = mask_name(bool(args.get("IS_CAUSAL")), bool(args.get("HAS_KPM")), bool(args.get("HAS_DOC")))
        avoid = {cfg for cfg, masks in spills.get(cls, {}).items() if mask in masks}
        wanted = set(gpu[cls]) - avoid
        return [c for c in configs
                if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]

    every = sorted({c for cls in gpu.values() for c in cls})
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
               for m, n, w, st in every]
    return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": prune})(
        kernel)


# Head dims 32 and 64 share the d64 lists and spill tables (the union of both head dims' spills)
# unless a d32 class is given: dQ has no config that is spill-free for both with padding + documents.
_fwd_kernel = _autotuned(_attn_fwd_kernel, {"BLOCK_M": 64, "BLOCK_N": 32}, {
    "d64": [(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 8, 3), (128, 32, 8, 3)],
    "d128": [(128, 32, 8, 3), (64, 64, 4, 3)],
    "fp32": [(64, 32, 4, 2)],
}, spills={"d64": {
    (128, 64, 8, 3): ("causal",),
    (64, 64, 4, 3): ("causal+pad",),
    (64, 64, 8, 3): ("causal+doc",),
    (128, 32, 8, 3): ("causal+doc", "causal+pad", "pad+doc", "doc"),
}})
_dkdv_kernel = _autotuned(_attn_bwd_dkdv_kernel, {"BLOCK_M": 32, "BLOCK_N": 64}, {
    "d64": [(64, 64, 8, 3), (32, 64, 4, 2), (32, 128, 8, 3)],
    "d128": [(64, 64, 8, 3), (32, 64, 8, 2)],
    "fp32": [(32, 64, 8, 2)],
}, spills={"d64": {(32, 128, 8, 3): ("causal",)}})
_dq_kernel = _autotuned(_attn_bwd_dq_kernel, {"BLOCK_M": 64, "BLOCK_N": 32}, {
    "d32": [(128, 32, 8, 3), (64, 64, 8, 3), (32, 128, 8, 3)],
    "d64": [(32, 128, 8, 3), (128, 64, 8, 3), (64, 64, 8, 3), (128, 32, 8, 3)],
    "d128": [(128, 32, 8, 3), (64, 32, 4, 3)],
    "fp32": [(64, 32, 4, 2)],
}, spills={
    "d32": {(64, 64, 8, 3): ("pad+doc",), (32, 128, 8, 3): ("causal", "pad+doc")},
    "d64": {
        (128, 32, 8, 3): ("causal+doc", "pad+doc", "doc"),
        (64, 64, 8, 3): ("causal+doc", "pad+doc"),
        (128, 64, 8, 3): ("causal+doc", "causal+pad"),
    },
})


# _bwd_delta_kernel: BLOCK_M rows of O and dO (BLOCK_D wide) per program with 8 warps, 16 elements of
# each per thread. Compiled for every head dim and dtype spill-free this way; 128 rows at head dim
# 128 spilled, and fp16 spilled 40 bytes at exactly 32 elements per thread (tinylm.kernels.aot).
DELTA_WARPS = 8


def delta_block_m(block_d: int) -> int:
    return 64 if _INTERPRET else 4096 // block_d


def backward_delta(o: torch.Tensor, do: torch.Tensor, block_d: int) -> torch.Tensor:
    """(B * H, T) fp32 rowsums of dO * O from (B, H, T, D) tensors: the backward's Delta term, shared
    with tinylm.kernels.bert_attention."""
    B, H, T, D = o.shape
    delta = torch.empty((B * H, T), dtype=torch.float32, device=o.device)
    block_m = delta_block_m(block_d)
    _bwd_delta_kernel[(triton.cdiv(T, block_m), B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, T,
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=block_m, num_warps=DELTA_WARPS,
    )
    return delta


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _span_of_same_doc(src_doc: torch.Tensor, dst_doc: torch.Tensor) -> torch.Tensor:
    """For every position i of dst_doc (B, T): the first and last index j with
    src_doc[b, j] == dst_doc[b, i], as int32 (2, B, T); (T, -1) when there is none."""
    T = src_doc.shape[1]
    sorted_doc, order = torch.sort(src_doc, dim=1, stable=True)  # equal ids keep index order
    first = torch.searchsorted(sorted_doc, dst_doc)
    last = torch.searchsorted(sorted_doc, dst_doc, right=True) - 1
    found = last >= first
    lo = order.gather(1, first.clamp(max=T - 1))
    hi = order.gather(1, last.clamp(min=0))
    lo = torch.where(found, lo, T)
    hi = torch.where(found, hi, -1)
    return torch.stack([lo, hi]).to(torch.int32)


def _spans(kpm, doc, B, T, device):
    """(key span per query, query span per key), each (2, B, T) int32: the span rule above."""
    qdoc = doc.long() if doc is not None else torch.zeros(B, T, dtype=torch.long, device=device)
    # Padding keys get an id no query has, so they fall outside every span.
    kdoc = qdoc if kpm is None else torch.where(kpm.bool(), qdoc, torch.iinfo(torch.long).max)
    return _span_of_same_doc(kdoc, qdoc), _span_of_same_doc(qdoc, kdoc)


def _common(q, kpm, doc, causal):
    return dict(
        HEAD_DIM=q.shape[-1], BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
        IS_CAUSAL=bool(causal), HAS_KPM=kpm is not None, HAS_DOC=doc is not None,
        # fp32 inputs: 3xTF32 dots (fp32-level accuracy on tensor cores); 16-bit: plain MMA.
        PRECISION="tf32x3" if q.dtype == torch.float32 else "tf32",
    )


def _attn_forward(q, k, v, kpm, doc, kspan, causal, scale):
    B, H, T, D = q.shape
    o = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, T), dtype=torch.float32, device=q.device)
    dummy = lse  # stands in for absent masks; never read
    _fwd_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
        q, k, v, o, lse,
        kpm if kpm is not None else dummy, doc if doc is not None else dummy,
        kspan[0] if kspan is not None else dummy, kspan[1] if kspan is not None else dummy,
        *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        H, T, triton.next_power_of_2(T), scale * _LOG2E,
        **_common(q, kpm, doc, causal),
    )
    return o, lse


def _attn_backward(do, q, k, v, o, lse, kpm, doc, kspan, qspan, causal, scale):
    B, H, T, D = q.shape
    c = _common(q, kpm, doc, causal)
    delta = backward_delta(o, do, c["BLOCK_D"])
    dq = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, T, D), dtype=k.dtype, device=q.device)
    dv = torch.empty((B, H, T, D), dtype=v.dtype, device=q.device)
    dummy = delta
    kpm_arg = kpm if kpm is not None else dummy
    doc_arg = doc if doc is not None else dummy
    kspan = kspan if kspan is not None else (dummy, dummy)
    qspan = qspan if qspan is not None else (dummy, dummy)
    in_strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    _dkdv_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H)](
        q, k, v, do, dk, dv, lse, delta, kpm_arg, doc_arg, qspan[0], qspan[1],
        *in_strides, *_strides(dk), H, T, triton.next_power_of_2(T), scale, scale * _LOG2E, **c,
    )
    _dq_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
        q, k, v, do, dq, lse, delta, kpm_arg, doc_arg, kspan[0], kspan[1],
        *in_strides, *_strides(dq), H, T, triton.next_power_of_2(T), scale, scale * _LOG2E, **c,
    )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------------
# autograd


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, kpm, doc, scale):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        B, H, T, D = q.shape
        kspan = qspan = None
        if kpm is not None or doc is not None:
            kspan, qspan = _spans(kpm, doc, B, T, q.device)
        o, lse = _attn_forward(q, k, v, kpm, doc, kspan, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse, kpm, doc, kspan, qspan)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, kpm, doc, kspan, qspan = ctx.saved_tensors
        do = _last_dim_contiguous(do)
        dq, dk, dv = _attn_backward(do, q, k, v, o, lse, kpm, doc, kspan, qspan, ctx.causal,
                                    ctx.scale)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    doc_ids: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention over (B, H, T, D) tensors; same semantics as tinylm.ops.attention_reference.

    key_padding_mask: (B, T) bool, True = real token. doc_ids: (B, T) int, a query sees only keys
    with the same id. A query row that sees no key outputs zeros and gets zero gradients.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16,
                                                                torch.float32):
        raise ValueError(f"q, k, v must share a float16/bfloat16/float32 dtype, got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    B, H, T, D = q.shape
    if D > 128:
        raise ValueError(f"head dim up to 128 is supported, got {D}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    # Masks travel as small (B, T) int tensors: int8 padding flags, int32 doc ids.
    kpm = doc = None
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(device=q.device, dtype=torch.int8).expand(B, T).contiguous()
    if doc_ids is not None:
        doc = doc_ids.to(device=q.device, dtype=torch.int32).expand(B, T).contiguous()
    if q.numel() == 0:
        return torch.zeros_like(q).requires_grad_(q.requires_grad)
    return _FlashAttention.apply(q, k, v, bool(causal), kpm, doc, scale)
