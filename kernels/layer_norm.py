"""Fused LayerNorm (+ optional residual add) in Triton.

Forward: each program normalises a tile of BLOCK_M rows x BLOCK_N (= next_power_of_2(N)) columns,
so a whole row lives in registers and the mean/variance need one pass over memory. With a residual,
the kernel also writes h = x + residual (the next layer's residual stream) and normalises h, which
saves a separate elementwise kernel and one read of h. Statistics are fp32; mean and rstd are saved
(fp32, one per row) for the backward.

Backward: with xhat = (h - mean) * rstd and g = dy * w,
    dh = rstd * (g - mean(g) - xhat * mean(g * xhat)) + dsum     (dsum: grad flowing into h itself)
    dw = sum_rows(dy * xhat),  db = sum_rows(dy)
dh is both dx and dresidual. dw/db are column sums over all rows: a fixed number of programs G
(a few per SM) each walks a strided subset of row tiles and keeps fp32 partial sums in registers,
writes them to a (2, G, N) buffer, and a second small kernel sums the G rows and casts to the
parameter dtypes. This two-stage reduction is deterministic and avoids atomics/locks.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# One row lives in registers (BLOCK_N = next_power_of_2(N)); past 8192 (4096 for N % 16 != 0) the
# backward spills, so tinylm.ops routes only narrower rows here under "auto" (see kernels/aot.py).
_MAX_N = 16384


@triton.jit
def _ln_fwd_kernel(
    X, R, W, B, Y, H, Mean, Rstd,  # X, R, Y, H: (M, N) row-major; W, B: (N,); Mean, Rstd: (M,) fp32
    M, N, eps,
    HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    col_ok = cols < N
    mask = (rows < M)[:, None] & col_ok[None, :]  # (BLOCK_M, BLOCK_N)
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]  # int64: M * N may exceed 2^31

    h = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        h_io = (h + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)).to(H.dtype.element_ty)
        tl.store(H + offs, h_io, mask=mask)
        # Normalise the sum rounded to the input dtype, as the reference (x + residual in that
        # dtype, then layer_norm) does.
        h = h_io.to(tl.float32)

    mean = tl.sum(h, axis=1) / N  # (BLOCK_M,)
    hc = tl.where(mask, h - mean[:, None], 0.0)  # padded columns must not enter the variance
    var = tl.sum(hc * hc, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    y = hc * rstd[:, None]
    if HAS_W:
        y = y * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + rows, mean, mask=rows < M)
    tl.store(Rstd + rows, rstd, mask=rows < M)


@triton.jit
def _ln_bwd_kernel(
    H, DY, DSUM, W, Mean, Rstd, DH,  # H, DY, DSUM, DH: (M, N); W: (N,); Mean, Rstd: (M,)
    DW_part, DB_part,  # (G, N) fp32: this program's partial column sums
    M, N,
    HAS_DSUM: tl.constexpr, HAS_W: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)

    # Row tiles pid, pid + G, pid + 2G, ...: every program gets an even share of the rows.
    n_tiles = tl.cdiv(M, BLOCK_M)
    for tile in range(pid, n_tiles, n_progs):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]

        h = tl.load(H + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)

        xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_W:
            g = dy * w[None, :]
        else:
            g = dy
        c1 = tl.sum(g * xhat, axis=1) / N  # mean(g * xhat) per row
        c2 = tl.sum(g, axis=1) / N  # mean(g) per row
        dh = (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_DSUM:
            dh += tl.load(DSUM + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DH + offs, dh.to(DH.dtype.element_ty), mask=mask)

        if NEED_DW:
            dw_acc += tl.sum(dy * xhat, axis=0)
        if NEED_DB:
            db_acc += tl.sum(dy, axis=0)

    if NEED_DW:
        tl.store(DW_part + pid * N + cols, dw_acc, mask=col_ok)
    if NEED_DB:
        tl.store(DB_part + pid * N + cols, db_acc, mask=col_ok)


@triton.jit
def _ln_bwd_reduce_kernel(
    DW_part, DB_part, DW, DB,  # partials: (G, N) fp32; DW, DB: (N,) in the parameter dtypes
    G, N,
    NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Second stage of the dweight/dbias reduction: sum the G partial rows of a column block."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        mask = (g < G)[:, None] & col_ok[None, :]
        offs = g[:, None] * N + cols[None, :]
        if NEED_DW:
            dw += tl.sum(tl.load(DW_part + offs, mask=mask, other=0.0), axis=0)
        if NEED_DB:
            db += tl.sum(tl.load(DB_part + offs, mask=mask, other=0.0), axis=0)
    if NEED_DW:
        tl.store(DW + cols, dw.to(DW.dtype.element_ty), mask=col_ok)
    if NEED_DB:
        tl.store(DB + cols, db.to(DB.dtype.element_ty), mask=col_ok)


# --------------------------------------------------------------------------------------------------
# launchers


def _fwd_launch(N: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the forward for rows of N elements.

    A whole row is one BLOCK_N = next_power_of_2(N) tile, so statistics need one pass. Short rows
    are stacked BLOCK_M at a time (~4096 elements per program: enough bytes in flight per program
    and fewer, fatter programs). Warps: ~16 elements per thread, which compiles for sm_90 to ~80
    registers, leaving room for 3 programs per SM to hide DRAM latency.
    """
    BLOCK_N = triton.next_power_of_2(N)
    if _INTERPRET:  # the interpreter's cost is per program and per op, not per element
        return max(1, min(64, 8192 // BLOCK_N)), BLOCK_N, 1
    BLOCK_M = max(1, min(16, 4096 // BLOCK_N))
    return BLOCK_M, BLOCK_N, max(1, min(16, BLOCK_M * BLOCK_N // 512))


def _bwd_launch(N: int) -> tuple[int, int, int]:
    """Same for the backward, which keeps ~2x more live values per element (h, dy, xhat, g, dh):
    half the elements per program and ~8 per thread."""
    BLOCK_N = triton.next_power_of_2(N)
    if _INTERPRET:
        return max(1, min(64, 8192 // BLOCK_N)), BLOCK_N, 1
    BLOCK_M = max(1, min(16, 2048 // BLOCK_N))
    return BLOCK_M, BLOCK_N, max(1, min(16, BLOCK_M * BLOCK_N // 256))


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _ln_forward(x2, r2, weight, bias, eps):
    M, N = x2.shape
    y = torch.empty_like(x2)
    h = torch.empty_like(x2) if r2 is not None else None
    mean = torch.empty(M, dtype=torch.float32, device=x2.device)
    rstd = torch.empty(M, dtype=torch.float32, device=x2.device)
    if M == 0:
        return y, h, mean, rstd
    BLOCK_M, BLOCK_N, num_warps = _fwd_launch(N)
    _ln_fwd_kernel[(triton.cdiv(M, BLOCK_M),)](
        x2, r2 if r2 is not None else x2, weight if weight is not None else x2,
        bias if bias is not None else x2, y, h if h is not None else y, mean, rstd,
        M, N, eps,
        HAS_RES=r2 is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=num_warps,
    )
    return y, h, mean, rstd


def _ln_backward(h2, dy2, dsum2, weight, mean, rstd, dw_dtype, db_dtype):
    """dh (M, N), and dweight / dbias in dw_dtype / db_dtype (None = not wanted)."""
    M, N = h2.shape
    dh = torch.empty_like(h2)
    need_dw, need_db = dw_dtype is not None, db_dtype is not None
    BLOCK_M, BLOCK_N, num_warps = _bwd_launch(N)
    n_tiles = triton.cdiv(M, BLOCK_M)
    if _INTERPRET:
        G = min(n_tiles, 2)
    else:
        # Enough programs to fill every SM a few times over, few enough that the (G, N) partial
        # buffer stays small next to the (M, N) tensors.
        G = min(n_tiles, _sm_count(h2.device.index or 0) * 4)
    G = max(G, 1)  # M == 0 still runs one program, which writes zero partial sums
    # (2, G, N) fp32 partial column sums: [0] for dweight, [1] for dbias.
    part = None
    if need_dw or need_db:
        part = torch.empty(2, G, N, dtype=torch.float32, device=h2.device)
    _ln_bwd_kernel[(G,)](
        h2, dy2, dsum2 if dsum2 is not None else dy2, weight if weight is not None else h2,
        mean, rstd, dh, part[0] if need_dw else mean, part[1] if need_db else mean,
        M, N,
        HAS_DSUM=dsum2 is not None, HAS_W=weight is not None, NEED_DW=need_dw, NEED_DB=need_db,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=num_warps,
    )
    dw = torch.empty(N, dtype=dw_dtype, device=h2.device) if need_dw else None
    db = torch.empty(N, dtype=db_dtype, device=h2.device) if need_db else None
    if need_dw or need_db:
        BLOCK_COLS = 64 if _INTERPRET else 128
        _ln_bwd_reduce_kernel[(triton.cdiv(N, BLOCK_COLS),)](
            part[0], part[1], dw if need_dw else mean, db if need_db else mean, G, N,
            NEED_DW=need_dw, NEED_DB=need_db, BLOCK_G=32, BLOCK_N=BLOCK_COLS,
        )
    return dh, dw, db


# --------------------------------------------------------------------------------------------------
# autograd


class _FusedLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps):
        shape = x.shape
        N = shape[-1]
        x2 = x.contiguous().view(-1, N)
        r2 = residual.contiguous().view(-1, N) if residual is not None else None
        w = weight.contiguous() if weight is not None else None
        b = bias.contiguous() if bias is not None else None
        y, h, mean, rstd = _ln_forward(x2, r2, w, b, eps)
        ctx.save_for_backward(h if h is not None else x2, w, mean, rstd)
        ctx.has_res = residual is not None
        ctx.shape = shape
        ctx.w_dtype = weight.dtype if weight is not None else None
        ctx.b_dtype = bias.dtype if bias is not None else None
        ctx.set_materialize_grads(False)
        if residual is None:
            return y.view(shape)
        return y.view(shape), h.view(shape)

    @staticmethod
    def backward(ctx, dy, dsum=None):
        h2, w, mean, rstd = ctx.saved_tensors
        shape, N = ctx.shape, ctx.shape[-1]
        dw_dtype = ctx.w_dtype if ctx.needs_input_grad[1] else None
        db_dtype = ctx.b_dtype if ctx.needs_input_grad[2] else None
        dsum2 = dsum.contiguous().view(-1, N) if dsum is not None else None
        if dy is None:  # only the sum output was used downstream
            dh = dsum2 if dsum2 is not None else torch.zeros_like(h2)
            dw = db = None
        else:
            dy2 = dy.contiguous().view(-1, N)
            dh, dw, db = _ln_backward(h2, dy2, dsum2, w, mean, rstd, dw_dtype, db_dtype)
        dx = dh.view(shape)
        # x and residual receive the same gradient (d(x + residual) = dh for both).
        return dx, dw, db, (dx if ctx.has_res else None), None


def fused_layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
):
    """LayerNorm over the last dim of x (..., N), optionally of x + residual.

    Returns y, or (y, x + residual) when residual is given; outputs are in the input dtype,
    statistics in fp32. Same semantics as tinylm.ops.layer_norm_reference.
    """
    N = x.shape[-1]
    if N > _MAX_N:
        raise ValueError(f"fused_layer_norm supports hidden sizes up to {_MAX_N}, got {N}")
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
        dtype = torch.promote_types(x.dtype, residual.dtype)
        x, residual = x.to(dtype), residual.to(dtype)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (N,):
            raise ValueError(f"{name} must have shape ({N},), got {tuple(p.shape)}")
    return _FusedLayerNorm.apply(x, weight, bias, residual, float(eps))
