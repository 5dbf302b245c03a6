"""Chunkwise mLSTM cell (forward + backward) in Triton: the mathematics of
tinylm.models.mlstm_cell.mlstm_chunkwise (see that module for the cell and its stabiliser m).

Per (batch, head), with chunks of L = CHUNK tokens, k scaled by 1/sqrt(D), b_s the within-chunk
cumulative sum of log f, and the stabilised states (C~, n~, m) entering each chunk:

  forward
    1. _fwd_state_kernel: one program per (b, h, key tile, value tile) walks the chunks in order and
       writes the (C~, n~, m) entering every chunk, and after the last, in fp32
       (C~ <- exp(b_L + m - m') C~ + sum_j exp(a_j - m') k_j v_j^T, a_j = b_L - b_j + i_j);
    2. _fwd_out_kernel: one program per (chunk, value tile, b, h), all chunks in parallel: the
       intra-chunk (L, L) gate-weighted scores plus the carried state, normalised, and the per-row
       stabiliser m_row and denominator den (fp32) the backward needs.
  backward (the stabilisers are constants: h does not depend on them, so they carry no gradient)
    3. _fwd_state_kernel again (the states are recomputed, not kept between forward and backward);
    4. _bwd_state_kernel: the reverse recurrence for dC~, dn~ (the gradient of the state at the end
       of every chunk, in the same stabilisation as the state), one program per (b, h, tile pair);
    5. _bwd_chunk_kernel: one program per (chunk, head-dim tile, b, h): dq, dk, dv of the intra-
       chunk part plus the state terms, and the row sums q.dq and k.dk of its tile.
    Gate gradients come from those row sums: every output depends on i_j and log f only through
    the decay weights D_sj = exp(i_j + sum_{r=j+1..s} log f_r), and the row / column sums of
    dL/dlog D_sj are q_s.dq_s and k_j.dk_j, so exactly
        dL/di_j = k_j.dk_j,   dL/dlog f_t = sum_{s >= t} (q_s.dq_s - k_s.dk_s).
    Forget gate kinds (logsigmoid or exp) differ only in log f = F(f~), whose derivative autograd
    applies outside the kernel.

Documents: `seg` (B, T) segment ids (tinylm.models.mlstm_cell.segments). Token j reaches row s of the
same chunk iff seg_j == seg_s; the carried state reaches row s iff seg_s equals the segment of the
token before the chunk; a chunk's tokens enter the state at its end iff they share the segment of
its last token, exactly as the native chunkwise form masks them.

Any T: the gate arrays are padded to a multiple of L (input gate -inf, forget gate 1, segment of
the last token) and q, k, v read as 0 past T, which leaves every real output and state unchanged.
Head dims are covered in tiles of BLOCK_D (masked past D): D = 48, 64, 192, 256 all run.

The host side (launch grids and tiles, autograd, `mlstm_chunkwise`) is tinylm.kernels.mlstm.
"""

from __future__ import annotations

import triton
import triton.language as tl

NINF = tl.constexpr(float("-inf"))  # -inf, readable inside @triton.jit functions


# --------------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _fwd_state_kernel(
    K, V, BCUM, IGATE, SEG, C_ST, N_ST, M_ST,
    stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    H, T, NC, D, scale,
    HAS_SEG: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    bh = tl.program_id(0)
    tile = tl.program_id(1)
    n_dt = tl.cdiv(D, BLOCK_D)
    tk = tile // n_dt
    tv = tile % n_dt
    b = bh // H
    hh = bh % H
    Tp = NC * CHUNK
    offs_t = tl.arange(0, CHUNK)
    offs_k = tk * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_v = tv * BLOCK_D + tl.arange(0, BLOCK_D)
    k_ok = offs_k < D
    v_ok = offs_v < D
    k_ptr = K + b.to(tl.int64) * stride_kb + hh.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + hh.to(tl.int64) * stride_vh
    gate = bh.to(tl.int64) * Tp
    st = bh.to(tl.int64) * (NC + 1)
    c_off = offs_k[:, None] * D + offs_v[None, :]
    c_mask = k_ok[:, None] & v_ok[None, :]

    c = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    n = tl.zeros((BLOCK_D,), dtype=tl.float32)
    m = tl.max(tl.full((CHUNK,), NINF, tl.float32), axis=0)  # the empty memory: m = -inf
    tl.store(C_ST + st * D * D + c_off, c, mask=c_mask)
    if tv == 0:
        tl.store(N_ST + st * D + offs_k, n, mask=k_ok)
    if tile == 0:
        tl.store(M_ST + st, m)
    if HAS_SEG:
        seg_prev = tl.load(SEG + b.to(tl.int64) * Tp)  # chunk 0 carries the (empty) state: no reset at 0
    for ci in range(NC):
        t = ci * CHUNK + offs_t
        bc = tl.load(BCUM + gate + t)
        b_last = tl.load(BCUM + gate + ci * CHUNK + CHUNK - 1)
        a = b_last - bc + tl.load(IGATE + gate + t)  # log weight of token j in the state at chunk end
        g = b_last + m  # log weight of the carried state at chunk end
        if HAS_SEG:
            sg = tl.load(SEG + b.to(tl.int64) * Tp + t)
            s_last = tl.load(SEG + b.to(tl.int64) * Tp + ci * CHUNK + CHUNK - 1)
            a = tl.where(sg == s_last, a, NINF)
            g = tl.where(s_last == seg_prev, g, NINF)
            seg_prev = s_last
        m_new = tl.maximum(g, tl.max(a, axis=0))  # finite: the chunk's last real token counts
        w = tl.exp(a - m_new)
        row_ok = t < T
        kt = tl.load(k_ptr + (t * stride_kt)[:, None] + offs_k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        vt = tl.load(v_ptr + (t * stride_vt)[:, None] + offs_v[None, :], mask=row_ok[:, None] & v_ok[None, :], other=0.0)
        kw = kt.to(tl.float32) * (w * scale)[:, None]
        decay = tl.exp(g - m_new)
        c = decay * c + tl.dot(tl.trans(kw.to(kt.dtype)), vt, input_precision=PRECISION)
        n = decay * n + tl.sum(kw, axis=0)
        m = m_new
        tl.store(C_ST + (st + ci + 1) * D * D + c_off, c, mask=c_mask)
        if tv == 0:
            tl.store(N_ST + (st + ci + 1) * D + offs_k, n, mask=k_ok)
        if tile == 0:
            tl.store(M_ST + st + ci + 1, m)


@triton.jit
def _chunk_gates(BCUM, IGATE, SEG, M_ST, bh, b, ci, NC, CHUNK: tl.constexpr, HAS_SEG: tl.constexpr):
    """The within-chunk log weights of chunk ci: log D (L, L) masked to -inf, the carried state's
    log weight g per row (-inf after a reset), and the stabiliser of the entering state."""
    Tp = NC * CHUNK
    offs_t = tl.arange(0, CHUNK)
    t = ci * CHUNK + offs_t
    gate = bh.to(tl.int64) * Tp
    bc = tl.load(BCUM + gate + t)
    ig = tl.load(IGATE + gate + t)
    m_prev = tl.load(M_ST + bh.to(tl.int64) * (NC + 1) + ci)
    log_d = bc[:, None] - bc[None, :] + ig[None, :]
    keep = offs_t[:, None] >= offs_t[None, :]
    g = bc + m_prev
    if HAS_SEG:
        sg = tl.load(SEG + b.to(tl.int64) * Tp + t)
        seg_prev = tl.load(SEG + b.to(tl.int64) * Tp + tl.maximum(ci * CHUNK - 1, 0))
        keep = keep & (sg[:, None] == sg[None, :])
        g = tl.where(sg == seg_prev, g, NINF)
    log_d = tl.where(keep, log_d, NINF)
    return log_d, g, m_prev


@triton.jit
def _fwd_out_kernel(
    Q, K, V, BCUM, IGATE, SEG, C_ST, N_ST, M_ST, OUT, M_ROW, DEN,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H, T, NC, D, scale,
    HAS_SEG: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    ci = tl.program_id(0)
    tv = tl.program_id(1)
    bh = tl.program_id(2)
    b = bh // H
    hh = bh % H
    offs_t = tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    t = ci * CHUNK + offs_t
    row_ok = t < T
    offs_v = tv * BLOCK_D + offs_d
    v_ok = offs_v < D

    # 64-bit scalar bases, 32-bit offsets inside one (b, h) (see _bwd_chunk_kernel)
    q_ptr = Q + b.to(tl.int64) * stride_qb + hh.to(tl.int64) * stride_qh
    k_ptr = K + b.to(tl.int64) * stride_kb + hh.to(tl.int64) * stride_kh
    rq, rk = t * stride_qt, t * stride_kt
    c_in = C_ST + (bh.to(tl.int64) * (NC + 1) + ci) * D * D
    n_in = N_ST + (bh.to(tl.int64) * (NC + 1) + ci) * D
    qk = tl.zeros((CHUNK, CHUNK), dtype=tl.float32)
    qc = tl.zeros((CHUNK, BLOCK_D), dtype=tl.float32)
    qn = tl.zeros((CHUNK,), dtype=tl.float32)
    for kk in range(0, D, BLOCK_D):  # key-dim tiles: q k^T, q C~, q n~ need the whole key dim
        offs_k = kk + offs_d
        k_ok = offs_k < D
        lmask = row_ok[:, None] & k_ok[None, :]
        qt = tl.load(q_ptr + rq[:, None] + offs_k[None, :], mask=lmask, other=0.0)
        kt = tl.load(k_ptr + rk[:, None] + offs_k[None, :], mask=lmask, other=0.0)
        qk += tl.dot(qt, tl.trans(kt), input_precision=PRECISION)
        ct = tl.load(c_in + offs_k[:, None] * D + offs_v[None, :], mask=k_ok[:, None] & v_ok[None, :], other=0.0)
        qc += tl.dot(qt, ct.to(qt.dtype), input_precision=PRECISION)
        nt = tl.load(n_in + offs_k, mask=k_ok, other=0.0)
        qn += tl.sum(qt.to(tl.float32) * nt[None, :], axis=1)

    # the gate weights after the loop: fewer registers live while it runs
    log_d, g, m_prev = _chunk_gates(BCUM, IGATE, SEG, M_ST, bh, b, ci, NC, CHUNK, HAS_SEG)
    m_row = tl.maximum(g, tl.max(log_d, axis=1))
    # padding rows of a lone first chunk see nothing at all (m_row = -inf); keep them finite
    m_row = tl.where(m_row == NINF, 0.0, m_row)
    s = qk * scale * tl.exp(log_d - m_row[:, None])
    carry = tl.exp(g - m_row)
    vt = tl.load(V + b.to(tl.int64) * stride_vb + hh.to(tl.int64) * stride_vh + (t * stride_vt)[:, None] + offs_v[None, :],
                 mask=row_ok[:, None] & v_ok[None, :], other=0.0)
    num = tl.dot(s.to(vt.dtype), vt, input_precision=PRECISION) + carry[:, None] * qc
    den = tl.sum(s, axis=1) + carry * qn
    h = num / tl.maximum(tl.abs(den), tl.exp(-m_row))[:, None]
    o_ptr = OUT + b.to(tl.int64) * stride_ob + hh.to(tl.int64) * stride_oh + (t * stride_ot)[:, None] + offs_v[None, :]
    tl.store(o_ptr, h.to(OUT.dtype.element_ty), mask=row_ok[:, None] & v_ok[None, :])
    if tv == 0:
        row = bh.to(tl.int64) * NC * CHUNK + t
        tl.store(M_ROW + row, m_row)
        tl.store(DEN + row, den)


@triton.jit
def _bwd_state_kernel(
    Q, DH, BCUM, SEG, M_ST, M_ROW, INV_M, DDEN, DC_ST, DN_ST,
    stride_qb, stride_qh, stride_qt, stride_db, stride_dh, stride_dt,
    H, T, NC, D,
    HAS_SEG: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """dC~ / dn~ of the state at the end of every chunk, walking the chunks backwards. The state
    entering chunk c is read by its rows (num_s += carry_s C~^T q_s, den_s += carry_s n~.q_s) and
    carried into the next state with weight exp(b_L + m_c - m_{c+1}); the gradient flows back
    the same two ways."""
    bh = tl.program_id(0)
    tile = tl.program_id(1)
    n_dt = tl.cdiv(D, BLOCK_D)
    tk = tile // n_dt
    tv = tile % n_dt
    b = bh // H
    hh = bh % H
    Tp = NC * CHUNK
    offs_t = tl.arange(0, CHUNK)
    offs_k = tk * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_v = tv * BLOCK_D + tl.arange(0, BLOCK_D)
    k_ok = offs_k < D
    v_ok = offs_v < D
    q_ptr = Q + b.to(tl.int64) * stride_qb + hh.to(tl.int64) * stride_qh
    dh_ptr = DH + b.to(tl.int64) * stride_db + hh.to(tl.int64) * stride_dh
    gate = bh.to(tl.int64) * Tp
    st = bh.to(tl.int64) * NC
    c_off = offs_k[:, None] * D + offs_v[None, :]
    c_mask = k_ok[:, None] & v_ok[None, :]

    dc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)  # no gradient reaches the final state
    dn = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for cc in range(NC):
        ci = NC - 1 - cc
        tl.store(DC_ST + (st + ci) * D * D + c_off, dc, mask=c_mask)
        if tv == 0:
            tl.store(DN_ST + (st + ci) * D + offs_k, dn, mask=k_ok)
        t = ci * CHUNK + offs_t
        bc = tl.load(BCUM + gate + t)
        b_last = tl.load(BCUM + gate + ci * CHUNK + CHUNK - 1)
        m_prev = tl.load(M_ST + bh.to(tl.int64) * (NC + 1) + ci)
        m_next = tl.load(M_ST + bh.to(tl.int64) * (NC + 1) + ci + 1)
        g_row = bc + m_prev
        g_state = b_last + m_prev - m_next
        if HAS_SEG:
            sg = tl.load(SEG + b.to(tl.int64) * Tp + t)
            seg_prev = tl.load(SEG + b.to(tl.int64) * Tp + tl.maximum(ci * CHUNK - 1, 0))
            s_last = tl.load(SEG + b.to(tl.int64) * Tp + ci * CHUNK + CHUNK - 1)
            g_row = tl.where(sg == seg_prev, g_row, NINF)
            g_state = tl.where(s_last == seg_prev, g_state, NINF)
        carry = tl.exp(g_row - tl.load(M_ROW + gate + t))
        row_ok = t < T
        qt = tl.load(q_ptr + (t * stride_qt)[:, None] + offs_k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        dht = tl.load(dh_ptr + (t * stride_dt)[:, None] + offs_v[None, :], mask=row_ok[:, None] & v_ok[None, :], other=0.0)
        qw = qt.to(tl.float32) * carry[:, None]
        dnum = dht.to(tl.float32) * tl.load(INV_M + gate + t)[:, None]
        decay = tl.exp(g_state)
        dc = decay * dc + tl.dot(tl.trans(qw.to(qt.dtype)), dnum.to(qt.dtype), input_precision=PRECISION)
        dn = decay * dn + tl.sum(qw * tl.load(DDEN + gate + t)[:, None], axis=0)


@triton.jit
def _bwd_chunk_kernel(
    Q, K, V, DH, BCUM, IGATE, SEG, C_ST, N_ST, M_ST, M_ROW, INV_M, DDEN, DC_ST, DN_ST,
    DQ, DK, DV, QDQ, KDK,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_db, stride_dh, stride_dt,
    H, T, NC, D, scale,
    HAS_SEG: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """dq, dk, dv of chunk ci in head-dim tile td (columns td*BLOCK_D...). The (L, L) scores and
    their gradient need the whole head dim and are rebuilt by every tile's program."""
    ci = tl.program_id(0)
    td = tl.program_id(1)
    bh = tl.program_id(2)
    b = bh // H
    hh = bh % H
    Tp = NC * CHUNK
    offs_t = tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    t = ci * CHUNK + offs_t
    row_ok = t < T
    gate = bh.to(tl.int64) * Tp
    offs_o = td * BLOCK_D + offs_d  # this program's output columns
    o_ok = offs_o < D

    # 64-bit scalar bases, 32-bit offsets inside one (b, h): (L, BLOCK_D) tiles of 64-bit pointers
    # kept live across the loops would cost 32 registers each
    q_ptr = Q + b.to(tl.int64) * stride_qb + hh.to(tl.int64) * stride_qh
    k_ptr = K + b.to(tl.int64) * stride_kb + hh.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + hh.to(tl.int64) * stride_vh
    dh_ptr = DH + b.to(tl.int64) * stride_db + hh.to(tl.int64) * stride_dh
    rq, rk, rv, rd = t * stride_qt, t * stride_kt, t * stride_vt, t * stride_dt
    c_in = C_ST + (bh.to(tl.int64) * (NC + 1) + ci) * D * D  # state entering the chunk
    dc_end = DC_ST + (bh.to(tl.int64) * NC + ci) * D * D  # gradient of the state at its end
    n_in = N_ST + (bh.to(tl.int64) * (NC + 1) + ci) * D
    dn_end = DN_ST + (bh.to(tl.int64) * NC + ci) * D

    # pass 1 over the head dim: q k^T and dnum v^T
    qk = tl.zeros((CHUNK, CHUNK), dtype=tl.float32)
    dnv = tl.zeros((CHUNK, CHUNK), dtype=tl.float32)
    for kk in range(0, D, BLOCK_D):
        cols = kk + offs_d
        lmask = row_ok[:, None] & (cols < D)[None, :]
        qt = tl.load(q_ptr + rq[:, None] + cols[None, :], mask=lmask, other=0.0)
        kt = tl.load(k_ptr + rk[:, None] + cols[None, :], mask=lmask, other=0.0)
        qk += tl.dot(qt, tl.trans(kt), input_precision=PRECISION)
        vt = tl.load(v_ptr + rv[:, None] + cols[None, :], mask=lmask, other=0.0)
        dht = tl.load(dh_ptr + rd[:, None] + cols[None, :], mask=lmask, other=0.0)
        dnv += tl.dot(dht, tl.trans(vt), input_precision=PRECISION)
    # the gate weights only now, after the loop: fewer registers live while it runs
    log_d, g, m_prev = _chunk_gates(BCUM, IGATE, SEG, M_ST, bh, b, ci, NC, CHUNK, HAS_SEG)
    m_row = tl.load(M_ROW + gate + t)
    p = tl.exp(log_d - m_row[:, None])
    inv_m = tl.load(INV_M + gate + t)
    dden = tl.load(DDEN + gate + t)
    dt = Q.dtype.element_ty
    # both (L, L) matrices are only matmul operands from here on: keep them in the input dtype
    s = (qk * scale * p).to(dt)  # scores as in the forward
    ds = dnv * inv_m[:, None] + dden[:, None]  # dL/ds_sj = dnum_s.v_j + dden_s
    dsp = (ds * p * scale).to(dt)  # dL/d(q_s.k_j)

    carry = tl.exp(g - m_row)
    # weight of token j in the state at the chunk end (stabilised by that state's m)
    b_last = tl.load(BCUM + gate + ci * CHUNK + CHUNK - 1)
    m_next = tl.load(M_ST + bh.to(tl.int64) * (NC + 1) + ci + 1)
    a = b_last - tl.load(BCUM + gate + t) + tl.load(IGATE + gate + t)
    if HAS_SEG:
        sg = tl.load(SEG + b.to(tl.int64) * Tp + t)
        s_last = tl.load(SEG + b.to(tl.int64) * Tp + ci * CHUNK + CHUNK - 1)
        a = tl.where(sg == s_last, a, NINF)
    w = tl.exp(a - m_next)

    omask = row_ok[:, None] & o_ok[None, :]
    # each gradient is stored as soon as it is complete (fewer live registers); dq, dk, dv are
    # contiguous (B*H, Tp, D), the row sums (tiles, B*H, Tp)
    g_base = (bh.to(tl.int64) * Tp + ci * CHUNK) * D
    rsum = QDQ + (td.to(tl.int64) * tl.num_programs(2) + bh) * Tp + t
    ksum = KDK + (td.to(tl.int64) * tl.num_programs(2) + bh) * Tp + t

    # dq = dsp k + carry (C~ dnum + dden n~)
    acc = tl.zeros((CHUNK, BLOCK_D), dtype=tl.float32)
    for kk in range(0, D, BLOCK_D):
        cols = kk + offs_d
        c_ok = cols < D
        dht = tl.load(dh_ptr + rd[:, None] + cols[None, :], mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        dnum = (dht.to(tl.float32) * inv_m[:, None]).to(dt)
        ct = tl.load(c_in + offs_o[:, None] * D + cols[None, :], mask=o_ok[:, None] & c_ok[None, :], other=0.0)
        acc += tl.dot(dnum, tl.trans(ct.to(dt)), input_precision=PRECISION)  # C~[o, cols]
    n_o = tl.load(n_in + offs_o, mask=o_ok, other=0.0)
    k_o = tl.load(k_ptr + rk[:, None] + offs_o[None, :], mask=omask, other=0.0)
    dq = tl.dot(dsp, k_o, input_precision=PRECISION) + carry[:, None] * (acc + dden[:, None] * n_o[None, :])
    q_o = tl.load(q_ptr + rq[:, None] + offs_o[None, :], mask=omask, other=0.0)
    tl.store(rsum, tl.sum(q_o.to(tl.float32) * dq, axis=1))
    tl.store(DQ + g_base + offs_t[:, None] * D + offs_o[None, :], dq.to(DQ.dtype.element_ty), mask=omask)

    # dk = scale (dsp^T q + w (dC~_end v + dn~_end))
    acc = tl.zeros((CHUNK, BLOCK_D), dtype=tl.float32)
    for kk in range(0, D, BLOCK_D):
        cols = kk + offs_d
        c_ok = cols < D
        vt = tl.load(v_ptr + rv[:, None] + cols[None, :], mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        dct = tl.load(dc_end + offs_o[:, None] * D + cols[None, :], mask=o_ok[:, None] & c_ok[None, :], other=0.0)
        acc += tl.dot(vt, tl.trans(dct.to(dt)), input_precision=PRECISION)  # dC~[o, cols]
    dn_o = tl.load(dn_end + offs_o, mask=o_ok, other=0.0)
    dk = tl.dot(tl.trans(dsp), q_o, input_precision=PRECISION) + (w * scale)[:, None] * (acc + dn_o[None, :])
    tl.store(ksum, tl.sum(k_o.to(tl.float32) * dk, axis=1))
    tl.store(DK + g_base + offs_t[:, None] * D + offs_o[None, :], dk.to(DK.dtype.element_ty), mask=omask)

    # dv = s^T dnum + w (scale k) dC~_end[:, o]
    acc = tl.zeros((CHUNK, BLOCK_D), dtype=tl.float32)
    for kk in range(0, D, BLOCK_D):
        cols = kk + offs_d
        c_ok = cols < D
        kt = tl.load(k_ptr + rk[:, None] + cols[None, :], mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        dct = tl.load(dc_end + cols[:, None] * D + offs_o[None, :], mask=c_ok[:, None] & o_ok[None, :], other=0.0)
        acc += tl.dot(kt, dct.to(dt), input_precision=PRECISION)  # dC~[cols, o]
    dh_o = tl.load(dh_ptr + rd[:, None] + offs_o[None, :], mask=omask, other=0.0)
    dnum_o = (dh_o.to(tl.float32) * inv_m[:, None]).to(dt)
    dv = tl.dot(tl.trans(s), dnum_o, input_precision=PRECISION) + (w * scale)[:, None] * acc
    tl.store(DV + g_base + offs_t[:, None] * D + offs_o[None, :], dv.to(DV.dtype.element_ty), mask=omask)
