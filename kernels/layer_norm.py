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
writes them to a (G, N) buffer, and torch sums that buffer. This two-stage reduction is
deterministic and avoids atomics/locks.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_MAX_N = 32768  # one row must fit in registers (BLOCK_N = next_power_of_2(N))


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

    h = tl.load(X + offs, mask=mask, other=0.0)
    if HAS_RES:
        h = h + tl.load(R + offs, mask=mask, other=0.0)
        # Store the sum in the input dtype and normalise exactly that rounded value, as the
        # reference (x + residual, then layer_norm) does.
        tl.store(H + offs, h, mask=mask)
    h = h.to(tl.float32)

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


# --------------------------------------------------------------------------------------------------
# launchers


def _block_sizes(N: int, elem_size: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for rows of N elements of elem_size bytes.

    A whole row is one BLOCK_N = next_power_of_2(N) tile. Short rows are stacked BLOCK_M at a time
    so that every program still reads ~16 KB per tensor (enough bytes in flight to hide DRAM
    latency, and fewer, fatter programs). Warps: ~32 elements per thread per tensor keeps the fp32
    working set in registers without spilling.
    """
    BLOCK_N = triton.next_power_of_2(N)
    if _INTERPRET:
        # The interpreter's cost is per program and per op, not per element: big tiles.
        return max(1, min(64, 8192 // BLOCK_N)), BLOCK_N, 1
    BLOCK_M = max(1, min(16, 16384 // (BLOCK_N * elem_size)))
    num_warps = max(1, min(16, BLOCK_M * BLOCK_N // 1024))
    return BLOCK_M, BLOCK_N, num_warps


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
    BLOCK_M, BLOCK_N, num_warps = _block_sizes(N, x2.element_size())
    _ln_fwd_kernel[(triton.cdiv(M, BLOCK_M),)](
        x2, r2 if r2 is not None else x2, weight if weight is not None else x2,
        bias if bias is not None else x2, y, h if h is not None else y, mean, rstd,
        M, N, eps,
        HAS_RES=r2 is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=num_warps,
    )
    return y, h, mean, rstd


def _ln_backward(h2, dy2, dsum2, weight, mean, rstd, need_dw, need_db):
    M, N = h2.shape
    dh = torch.empty_like(h2)
    BLOCK_M, BLOCK_N, num_warps = _block_sizes(N, h2.element_size())
    # The backward tile holds ~4 live (BLOCK_M, BLOCK_N) fp32 tensors: halve the rows per tile.
    BLOCK_M = max(1, BLOCK_M // 2) if not _INTERPRET else BLOCK_M
    n_tiles = triton.cdiv(M, BLOCK_M)
    if _INTERPRET or not h2.is_cuda:
        G = min(n_tiles, 2)
    else:
        # Enough programs to fill every SM a few times over, few enough that the (G, N) partial
        # buffer stays small next to the (M, N) tensors.
        G = min(n_tiles, _sm_count(h2.device.index or 0) * 4)
    G = max(G, 1)
    dw_part = torch.empty(G, N, dtype=torch.float32, device=h2.device) if need_dw else None
    db_part = torch.empty(G, N, dtype=torch.float32, device=h2.device) if need_db else None
    if M > 0:
        _ln_bwd_kernel[(G,)](
            h2, dy2, dsum2 if dsum2 is not None else dy2, weight if weight is not None else h2,
            mean, rstd, dh,
            dw_part if need_dw else mean, db_part if need_db else mean,
            M, N,
            HAS_DSUM=dsum2 is not None, HAS_W=weight is not None, NEED_DW=need_dw, NEED_DB=need_db,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=num_warps,
        )
    elif need_dw or need_db:  # no rows: the column sums are zero
        for part in (dw_part, db_part):
            if part is not None:
                part.zero_()
    dw = dw_part.sum(0) if need_dw else None
    db = db_part.sum(0) if need_db else None
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
        need_dw = w is not None and ctx.needs_input_grad[1]
        need_db = ctx.b_dtype is not None and ctx.needs_input_grad[2]
        dsum2 = dsum.contiguous().view(-1, N) if dsum is not None else None
        if dy is None:  # only the sum output was used downstream
            dh = dsum2 if dsum2 is not None else torch.zeros_like(h2)
            dw = db = None
        else:
            dy2 = dy.contiguous().view(-1, N)
            dh, dw, db = _ln_backward(h2, dy2, dsum2, w, mean, rstd, need_dw, need_db)
        dx = dh.view(shape)
        dw = dw.to(ctx.w_dtype) if dw is not None else None
        db = db.to(ctx.b_dtype) if db is not None else None
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
