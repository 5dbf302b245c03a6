"""LTG-BERT's disentangled relative attention, fused (forward + backward) in Triton.

    score(i, j) = (q_i . k_j + c2p[i, r] + p2c[j, r]) * scale,    r = bucket(i - j)
    out_i       = sum_j softmax_j(score(i, j)) v_j

q, k, v (B, H, T, D); c2p = q Kp^T and p2c = k Qp^T (B, H, T, R) are computed outside by one matmul
each (their autograd carries the gradient on to the relative position embeddings); `bucket` is a
1-D table over the signed distance d = i - j. The same kernel serves a per-head bucket bias
(T5 / ALiBi style, `bert_arch=simple`): c2p = bias / scale broadcast over batch and rows (stride
0), no p2c (HAS_P2C=False).

This is the FlashAttention of kernels/attention_kernels.py (same block loops, online softmax in base 2,
masks and span-based block skipping, whose helpers it imports) with the position terms added to
each (query block, key block) tile of scores. Nothing of size (T, T) exists in memory:

- Forward: r for the tile is read from the bucket table at i - j (the table is padded by
  BKT_PAD entries on each side with its edge values, so the rows and columns past T in a last block
  index it without a mask), then c2p[i, r] and p2c[j, r] are gathered from the (T, R) rows of this
  (batch, head), which stay in L1/L2 (R is small: 63 for the shipped configs).
- Backward (FlashAttention-2 split, no atomics): both programs recompute the tile's scores as the
  forward. With dS the gradient of the scores (before `scale`), the gathers' adjoints are
      dc2p[i, r] = sum_j dS[i, j] [bucket(i - j) == r]   (a sum along the query row i)
      dp2c[j, r] = sum_i dS[i, j] [bucket(i - j) == r]   (a sum along the key row j)
  The dQ program owns the query rows of its block and visits every key block, so it accumulates
  dc2p for its rows in registers; the dK/dV program does the same for dp2c of its key rows. No
  two programs write the same row: no atomics, deterministic.
  How a row of a tile is reduced by bucket: every bucket of the schemes in use covers one
  contiguous interval of distances [dlo[r], dhi[r]] (log buckets and T5 buckets are monotone in
  the distance on each side; the launcher checks this on the device). Within one tile row the
  distance changes by one per column, so a bucket's columns are one contiguous run, and its sum
  is a difference of two entries of the row's prefix sum: one tl.cumsum over the tile and two
  tl.gather of (rows, R) entries, instead of a (rows, columns, R) one-hot reduction. Prefix sums
  are kept in fp32 (a row of dS sums to about 0, so the cancellation costs ~1 ulp of the row's
  scale).

Masks (causal, key padding, document ids), the rows with no visible key (output 0, LSE +inf,
zero gradients) and the skipped blocks are exactly those of kernels/attention_kernels.py. Attention
dropout is not implemented: tinylm.ops sends dropout_p > 0 to the PyTorch path.

The host side (bucket tables, autotune tables, launchers, autograd, `relative_flash_attention`)
is tinylm.kernels.bert_attention.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tinylm.kernels.attention_kernels import _load_tile, _pair_mask, _span, _store_tile


# --------------------------------------------------------------------------------------------------
# tile helpers


@triton.jit
def _position_scores(C2P, P2C, BKT, qi, kj, T, stride_ct, stride_pt, HAS_P2C: tl.constexpr):
    """c2p[i, r] + p2c[j, r] with r = bucket(i - j), fp32, for broadcastable index tensors qi
    (queries) and kj (keys): (M, 1) and (1, N) for a (queries x keys) tile, or the transpose."""
    r = tl.load(BKT + (qi - kj))  # padded table: every (qi, kj) of a tile is in range
    pos = tl.load(C2P + qi * stride_ct + r, mask=qi < T, other=0.0).to(tl.float32)
    if HAS_P2C:
        pos += tl.load(P2C + kj * stride_pt + r, mask=kj < T, other=0.0).to(tl.float32)
    return pos


@triton.jit
def _segment_sums(x, lo, hi, N: tl.constexpr):
    """For each row of x (M, N) and each (row, r) of lo, hi (M, R): sum of x[row, lo:hi + 1] with
    the column range clipped to [0, N); 0 when it is empty. Two gathers from the row prefix sums."""
    cs = tl.cumsum(x, axis=1)
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(hi, N - 1)
    top = tl.gather(cs, tl.maximum(hi, 0), axis=1)
    below = tl.gather(cs, tl.minimum(tl.maximum(lo - 1, 0), N - 1), axis=1)
    below = tl.where(lo > 0, below, 0.0)
    return tl.where(lo <= hi, top - below, 0.0)


# --------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, qdoc, K, V, C2P, P2C, BKT, KPM, DOC, stride_kt, stride_vt, stride_ct,
    stride_pt, offs_m, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_DOC: tl.constexpr, HAS_P2C: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    """Online-softmax update with the key blocks starting in [lo, hi) (attention.py's, plus the
    position terms)."""
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or MASK_BOUNDS or HAS_KPM or HAS_DOC
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        s += _position_scores(C2P, P2C, BKT, offs_m[:, None], offs_n[None, :], T, stride_ct,
                              stride_pt, HAS_P2C)
        s = s * qk_scale
        if APPLY_MASK:
            mask = _pair_mask(offs_m, offs_n, KPM, DOC, qdoc, T, MASK_CAUSAL, HAS_KPM, HAS_DOC)
            s = tl.where(mask, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # no NaN for unseen rows
        else:
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_use = m_new
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _rel_fwd_kernel(
    Q, K, V, C2P, P2C, BKT, O, LSE, KPM, DOC, KSPAN_LO, KSPAN_HI,
    # Q, K, V, O (B, H, T, D); C2P, P2C (B, H, T, R) strided, last dim contiguous; BKT int32
    # (2 T - 1 + 2 BKT_PAD) buckets of d = i - j, entry d + T - 1 + BKT_PAD; LSE (B*H, T) fp32
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    stride_cb, stride_ch, stride_ct, stride_pb, stride_ph, stride_pt,
    H, T, T_BUCKET, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BKT_PAD: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr,
    HAS_P2C: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    C2P += b * stride_cb + h * stride_ch
    P2C += b * stride_pb + h * stride_ph
    BKT += T - 1 + BKT_PAD  # BKT[d] is now the bucket of distance d
    KPM += b * T
    DOC += b * T
    KSPAN_LO += b * T
    KSPAN_HI += b * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                   BLOCK_D)
    if HAS_DOC:
        qdoc = tl.load(DOC + offs_m, mask=m_ok, other=0)
    else:
        qdoc = offs_m  # unused
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    # Key blocks [lo, mid) need no causal or bounds mask, [mid, hi) do (as attention.py).
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
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, qdoc, K, V, C2P, P2C, BKT, KPM, DOC, stride_kt, stride_vt, stride_ct,
        stride_pt, offs_m, offs_d, lo, mid, T, qk_scale,
        False, False, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, qdoc, K, V, C2P, P2C, BKT, KPM, DOC, stride_kt, stride_vt, stride_ct,
        stride_pt, offs_m, offs_d, mid, hi, T, qk_scale,
        IS_CAUSAL, True, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    empty = l_i == 0.0  # rows that saw no key: output 0, LSE +inf (=> zero grads)
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    _store_tile(O + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty), m_ok,
                offs_d, HEAD_DIM, BLOCK_D)
    tl.store(LSE + pid_bh * T + offs_m, lse, mask=m_ok)


# --------------------------------------------------------------------------------------------------
# backward: dK, dV, dp2c (one program per key block)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, dp2c, k, v, dlo, dhi, Q, DO, C2P, P2C, BKT, LSE, Delta, KPM, DOC,
    stride_qt, stride_dot, stride_ct, stride_pt, offs_n, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr,
    HAS_P2C: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Accumulate dK, dV and dp2c of one key block over the query blocks starting in [lo, hi), in
    the transposed (keys x queries) orientation. Query rows >= T load LSE = +inf, so their
    probabilities are exactly 0 whatever their position terms."""
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or HAS_KPM or HAS_DOC
    if HAS_DOC:
        kdoc = tl.load(DOC + offs_n, mask=offs_n < T, other=0)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < T
        q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d,
                       HEAD_DIM, BLOCK_D)
        lse = tl.load(LSE + offs_m, mask=m_ok, other=float("inf"))
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        sT += _position_scores(C2P, P2C, BKT, offs_m[None, :], offs_n[:, None], T, stride_ct,
                               stride_pt, HAS_P2C)
        pT = tl.exp2(sT * qk_scale - lse[None, :])
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
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PRECISION)
        if HAS_P2C:
            # key row j, query column i = start_m + a: d = i - j in [dlo, dhi] <=> a in
            # [j - start_m + dlo, j - start_m + dhi]
            base = offs_n[:, None] - start_m
            dp2c += _segment_sums(dsT, base + dlo[None, :], base + dhi[None, :], BLOCK_M)
    return dk, dv, dp2c


@triton.jit
def _rel_bwd_dkdv_kernel(
    Q, K, V, C2P, P2C, BKT, DLO, DHI, DO, DK, DV, DP2C, LSE, Delta, KPM, DOC, QSPAN_LO, QSPAN_HI,
    # DLO, DHI int32 (BLOCK_R,): distance bounds of each bucket; DP2C (B, H, T, R) contiguous
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_cb, stride_ch, stride_ct, stride_pb, stride_ph, stride_pt,
    stride_gb, stride_gh, stride_gt,  # strides of DK and DV
    H, T, R, T_BUCKET, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BKT_PAD: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr,
    HAS_P2C: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    C2P += b * stride_cb + h * stride_ch
    P2C += b * stride_pb + h * stride_ph
    DK += b * stride_gb + h * stride_gh
    DV += b * stride_gb + h * stride_gh
    DP2C += pid_bh.to(tl.int64) * T * R
    BKT += T - 1 + BKT_PAD
    LSE += pid_bh * T
    Delta += pid_bh * T
    KPM += b * T
    DOC += b * T
    QSPAN_LO += b * T
    QSPAN_HI += b * T

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_r = tl.arange(0, BLOCK_R)
    n_ok = offs_n < T
    k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], n_ok, offs_d, HEAD_DIM,
                   BLOCK_D)
    v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], n_ok, offs_d, HEAD_DIM,
                   BLOCK_D)
    dlo = tl.load(DLO + offs_r)
    dhi = tl.load(DHI + offs_r)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dp2c = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)

    # Query blocks [lo, mid) need the causal mask, [mid, hi) do not (as attention.py).
    hi = tl.cdiv(T, BLOCK_M) * BLOCK_M
    if IS_CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        mid = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
    else:
        lo = 0
        mid = 0
    if HAS_KPM or HAS_DOC:
        span_lo, span_hi = _span(QSPAN_LO, QSPAN_HI, offs_n, T)
        lo = tl.maximum(lo, (span_lo // BLOCK_M) * BLOCK_M)
        hi = tl.minimum(hi, span_hi)
    mid = tl.minimum(tl.maximum(mid, lo), hi)
    dk, dv, dp2c = _bwd_dkdv_inner(
        dk, dv, dp2c, k, v, dlo, dhi, Q, DO, C2P, P2C, BKT, LSE, Delta, KPM, DOC,
        stride_qt, stride_dot, stride_ct, stride_pt, offs_n, offs_d, lo, mid, T, qk_scale,
        IS_CAUSAL, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_M, PRECISION,
    )
    dk, dv, dp2c = _bwd_dkdv_inner(
        dk, dv, dp2c, k, v, dlo, dhi, Q, DO, C2P, P2C, BKT, LSE, Delta, KPM, DOC,
        stride_qt, stride_dot, stride_ct, stride_pt, offs_n, offs_d, mid, hi, T, qk_scale,
        False, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_M, PRECISION,
    )
    dk = dk * sm_scale  # scores = scale * (q k^T + positions)
    _store_tile(DK + offs_n[:, None] * stride_gt + offs_d[None, :], dk.to(DK.dtype.element_ty),
                n_ok, offs_d, HEAD_DIM, BLOCK_D)
    _store_tile(DV + offs_n[:, None] * stride_gt + offs_d[None, :], dv.to(DV.dtype.element_ty),
                n_ok, offs_d, HEAD_DIM, BLOCK_D)
    if HAS_P2C:
        dp2c = dp2c * sm_scale
        tl.store(DP2C + offs_n[:, None] * R + offs_r[None, :], dp2c.to(DP2C.dtype.element_ty),
                 mask=n_ok[:, None] & (offs_r < R)[None, :])


# --------------------------------------------------------------------------------------------------
# backward: dQ, dc2p (one program per query block)


@triton.jit
def _bwd_dq_inner(
    dq, dc2p, q, do, lse, delta, qdoc, dlo, dhi, K, V, C2P, P2C, BKT, KPM, DOC,
    stride_kt, stride_vt, stride_ct, stride_pt, offs_m, offs_d, lo, hi, T, qk_scale,
    MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_DOC: tl.constexpr, HAS_P2C: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    """Accumulate dQ and dc2p of one query block over the key blocks starting in [lo, hi)."""
    APPLY_MASK: tl.constexpr = MASK_CAUSAL or MASK_BOUNDS or HAS_KPM or HAS_DOC
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K + offs_n[:, None] * stride_kt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        v = _load_tile(V + offs_n[:, None] * stride_vt + offs_d[None, :], offs_n < T, offs_d,
                       HEAD_DIM, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        s += _position_scores(C2P, P2C, BKT, offs_m[:, None], offs_n[None, :], T, stride_ct,
                              stride_pt, HAS_P2C)
        p = tl.exp2(s * qk_scale - lse[:, None])
        if APPLY_MASK:
            mask = _pair_mask(offs_m, offs_n, KPM, DOC, qdoc, T, MASK_CAUSAL, HAS_KPM, HAS_DOC)
            p = tl.where(mask, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
        # query row i, key column j = start_n + c: d = i - j in [dlo, dhi] <=> c in
        # [i - start_n - dhi, i - start_n - dlo]
        base = offs_m[:, None] - start_n
        dc2p += _segment_sums(ds, base - dhi[None, :], base - dlo[None, :], BLOCK_N)
    return dq, dc2p


@triton.jit
def _rel_bwd_dq_kernel(
    Q, K, V, C2P, P2C, BKT, DLO, DHI, DO, DQ, DC2P, LSE, Delta, KPM, DOC, KSPAN_LO, KSPAN_HI,
    # DC2P (B, H, T, R) contiguous
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_cb, stride_ch, stride_ct, stride_pb, stride_ph, stride_pt,
    stride_gb, stride_gh, stride_gt,  # strides of DQ
    H, T, R, T_BUCKET, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BKT_PAD: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr,
    HAS_P2C: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    C2P += b * stride_cb + h * stride_ch
    P2C += b * stride_pb + h * stride_ph
    DQ += b * stride_gb + h * stride_gh
    DC2P += pid_bh.to(tl.int64) * T * R
    BKT += T - 1 + BKT_PAD
    KPM += b * T
    DOC += b * T
    KSPAN_LO += b * T
    KSPAN_HI += b * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_r = tl.arange(0, BLOCK_R)
    m_ok = offs_m < T
    q = _load_tile(Q + offs_m[:, None] * stride_qt + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                   BLOCK_D)
    do = _load_tile(DO + offs_m[:, None] * stride_dot + offs_d[None, :], m_ok, offs_d, HEAD_DIM,
                    BLOCK_D)
    # rows past T: LSE = +inf makes their probabilities 0 whatever their position terms
    lse = tl.load(LSE + pid_bh * T + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(Delta + pid_bh * T + offs_m, mask=m_ok, other=0.0)
    if HAS_DOC:
        qdoc = tl.load(DOC + offs_m, mask=m_ok, other=0)
    else:
        qdoc = offs_m  # unused
    dlo = tl.load(DLO + offs_r)
    dhi = tl.load(DHI + offs_r)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    dc2p = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)

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
    dq, dc2p = _bwd_dq_inner(
        dq, dc2p, q, do, lse, delta, qdoc, dlo, dhi, K, V, C2P, P2C, BKT, KPM, DOC,
        stride_kt, stride_vt, stride_ct, stride_pt, offs_m, offs_d, lo, mid, T, qk_scale,
        False, False, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    dq, dc2p = _bwd_dq_inner(
        dq, dc2p, q, do, lse, delta, qdoc, dlo, dhi, K, V, C2P, P2C, BKT, KPM, DOC,
        stride_kt, stride_vt, stride_ct, stride_pt, offs_m, offs_d, mid, hi, T, qk_scale,
        IS_CAUSAL, True, HAS_KPM, HAS_DOC, HAS_P2C, HEAD_DIM, BLOCK_D, BLOCK_N, PRECISION,
    )
    dq = dq * sm_scale
    dc2p = dc2p * sm_scale
    _store_tile(DQ + offs_m[:, None] * stride_gt + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                m_ok, offs_d, HEAD_DIM, BLOCK_D)
    tl.store(DC2P + offs_m[:, None] * R + offs_r[None, :], dc2p.to(DC2P.dtype.element_ty),
             mask=m_ok[:, None] & (offs_r < R)[None, :])
