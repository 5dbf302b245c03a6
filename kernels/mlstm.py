"""The chunkwise mLSTM cell (forward + backward) in Triton: the host side.

The kernels, and the mathematics of each, are in tinylm.kernels.mlstm_kernels; this module pads the
gates, picks the tiles and launch grids, wraps the kernels in an autograd Function
(`mlstm_chunkwise`, the same results as tinylm.models.mlstm_cell.mlstm_chunkwise) and lists what
`make test-aot` compiles.
"""

from __future__ import annotations

import math
import os

import torch
import triton

from tinylm.kernels.mlstm_kernels import _bwd_chunk_kernel, _bwd_state_kernel, _fwd_out_kernel, _fwd_state_kernel

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Chunk sizes the compiled kernels take: tl.dot needs every dimension >= 16 on the GPU, and 128
# keeps the (L, L) score tiles in registers. The interpreter takes any power of two (tests use 4).
GPU_CHUNKS = (16, 32, 64, 128)
NEG_INF = float("-inf")


def block_d(D: int) -> int:
    """Head-dim tile: the whole head up to 64 (masked past D), else tiles of 64."""
    return min(64, max(16, triton.next_power_of_2(D)))


def launch_warps(chunk: int) -> int:
    return 4 if chunk <= 32 else 8


# --------------------------------------------------------------------------------------------------
# launchers


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs are for accuracy checks: IEEE dots (no TF32). bf16/fp16 ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"


def check_chunk(chunk: int) -> None:
    ok = chunk >= 1 and chunk & (chunk - 1) == 0 and (_INTERPRET or chunk in GPU_CHUNKS)
    if not ok:
        allowed = "a power of two" if _INTERPRET else f"one of {', '.join(map(str, GPU_CHUNKS))}"
        raise ValueError(f"the Triton mLSTM kernel takes chunk sizes {allowed}, not {chunk} "
                         "(model.mlstm_chunk_size; kernels=auto runs other sizes in PyTorch)")


def _gates(i_pre, log_f, seg, chunk):
    """Padded fp32 gate arrays (B*H, Tp): input gate (pad -inf), within-chunk cumulative log forget
    (pad log f = 0), and int32 segments (B, Tp) (pad: the last token's) or None."""
    B, H, T = i_pre.shape
    NC = -(-T // chunk)
    pad = NC * chunk - T
    ig = torch.nn.functional.pad(i_pre.float(), (0, pad), value=NEG_INF)
    lf = torch.nn.functional.pad(log_f.float(), (0, pad), value=0.0)
    bcum = lf.view(B, H, NC, chunk).cumsum(-1).view(B * H, NC * chunk).contiguous()
    segp = None
    if seg is not None:
        segp = torch.cat([seg, seg[:, -1:].expand(B, pad)], dim=1) if pad else seg
        segp = segp.to(torch.int32).contiguous()
    return ig.reshape(B * H, NC * chunk).contiguous(), bcum, segp, NC


def _strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


def _states(k, v, ig, bcum, segp, NC, chunk, scale):
    B, H, T, D = k.shape
    BD = block_d(D)
    nt = triton.cdiv(D, BD)
    dev = k.device
    c_st = torch.empty(B * H, NC + 1, D, D, dtype=torch.float32, device=dev)
    n_st = torch.empty(B * H, NC + 1, D, dtype=torch.float32, device=dev)
    m_st = torch.empty(B * H, NC + 1, dtype=torch.float32, device=dev)
    _fwd_state_kernel[(B * H, nt * nt)](
        k, v, bcum, ig, segp if segp is not None else bcum, c_st, n_st, m_st,
        *_strides(k), *_strides(v), H, T, NC, D, scale,
        HAS_SEG=segp is not None, CHUNK=chunk, BLOCK_D=BD, PRECISION=_precision(k.dtype),
        num_warps=launch_warps(chunk), num_stages=1 if _INTERPRET else 2,
    )
    return c_st, n_st, m_st


class _MLSTMChunkwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i_pre, log_f, seg, chunk):
        B, H, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        ig, bcum, segp, NC = _gates(i_pre, log_f, seg, chunk)
        c_st, n_st, m_st = _states(k, v, ig, bcum, segp, NC, chunk, scale)
        out = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
        m_row = torch.empty(B * H, NC * chunk, dtype=torch.float32, device=q.device)
        den = torch.empty_like(m_row)
        BD = block_d(D)
        _fwd_out_kernel[(NC, triton.cdiv(D, BD), B * H)](
            q, k, v, bcum, ig, segp if segp is not None else bcum, c_st, n_st, m_st, out, m_row, den,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out), H, T, NC, D, scale,
            HAS_SEG=segp is not None, CHUNK=chunk, BLOCK_D=BD, PRECISION=_precision(q.dtype),
            num_warps=launch_warps(chunk), num_stages=1 if _INTERPRET else 2,
        )
        ctx.save_for_backward(q, k, v, ig, bcum, segp, out, m_row, den)
        ctx.chunk, ctx.dtypes = chunk, (i_pre.dtype, log_f.dtype)
        final = (c_st[:, NC].view(B, H, D, D), n_st[:, NC].view(B, H, D), m_st[:, NC].view(B, H))
        ctx.mark_non_differentiable(*final)
        return (out, *final)

    @staticmethod
    def backward(ctx, dh, *_final_grads):
        q, k, v, ig, bcum, segp, out, m_row, den = ctx.saved_tensors
        chunk = ctx.chunk
        B, H, T, D = q.shape
        NC = bcum.shape[1] // chunk
        Tp = NC * chunk
        scale = 1.0 / math.sqrt(D)
        if dh.stride(-1) != 1:
            dh = dh.contiguous()
        dh = dh.to(q.dtype)
        c_st, n_st, m_st = _states(k, v, ig, bcum, segp, NC, chunk, scale)
        # h = num / M, M = max(|den|, exp(-m_row)): dL/dnum = dh / M, and den gets a gradient only
        # where |den| wins the max: dL/dden = -(dh.h) / M * sign(den).
        big = den.abs() > torch.exp(-m_row)
        M = torch.where(big, den.abs(), torch.exp(-m_row))
        inv_m = 1.0 / M
        dh_h = torch.nn.functional.pad((dh.float() * out.float()).sum(-1), (0, Tp - T)).view(B * H, Tp)
        dden = torch.where(big, -dh_h * inv_m * torch.sign(den), torch.zeros_like(den)).contiguous()
        inv_m = inv_m.contiguous()

        BD = block_d(D)
        nt = triton.cdiv(D, BD)
        seg_arg = segp if segp is not None else bcum
        prec = _precision(q.dtype)
        warps, stages = launch_warps(chunk), 1 if _INTERPRET else 2
        dc_st = torch.empty(B * H, NC, D, D, dtype=torch.float32, device=q.device)
        dn_st = torch.empty(B * H, NC, D, dtype=torch.float32, device=q.device)
        _bwd_state_kernel[(B * H, nt * nt)](
            q, dh, bcum, seg_arg, m_st, m_row, inv_m, dden, dc_st, dn_st,
            *_strides(q), *_strides(dh), H, T, NC, D,
            HAS_SEG=segp is not None, CHUNK=chunk, BLOCK_D=BD, PRECISION=prec,
            num_warps=warps, num_stages=stages,
        )
        dq = torch.empty(B, H, Tp, D, dtype=q.dtype, device=q.device)
        dk, dv = torch.empty_like(dq), torch.empty_like(dq)
        qdq = torch.empty(nt, B * H, Tp, dtype=torch.float32, device=q.device)
        kdk = torch.empty_like(qdq)
        _bwd_chunk_kernel[(NC, nt, B * H)](
            q, k, v, dh, bcum, ig, seg_arg, c_st, n_st, m_st, m_row, inv_m, dden, dc_st, dn_st,
            dq, dk, dv, qdq, kdk,
            *_strides(q), *_strides(k), *_strides(v), *_strides(dh), H, T, NC, D, scale,
            HAS_SEG=segp is not None, CHUNK=chunk, BLOCK_D=BD, PRECISION=prec,
            num_warps=warps, num_stages=stages,
        )
        qdq, kdk = qdq.sum(0).view(B, H, Tp)[..., :T], kdk.sum(0).view(B, H, Tp)[..., :T]
        d_i = kdk
        d_logf = (qdq - kdk).flip(-1).cumsum(-1).flip(-1)  # sum over s >= t
        i_dtype, f_dtype = ctx.dtypes
        return (dq[:, :, :T], dk[:, :, :T], dv[:, :, :T], d_i.to(i_dtype), d_logf.to(f_dtype), None, None)


def mlstm_chunkwise(q, k, v, i_pre, log_f, seg=None, chunk_size: int = 64):
    """The chunkwise mLSTM cell from the empty memory. q, k, v: (B, H, T, D) (last dim contiguous);
    i_pre, log_f: (B, H, T) input-gate pre-activations and log forget gates; seg: (B, T) segment
    ids or None. Returns (h (B, H, T, D) in q's dtype, (C~, n~, m) after the last token, fp32).

    Gradients flow to q, k, v, i_pre and log_f through h; the returned state is detached (it
    serves generation, which runs without gradients)."""
    check_chunk(chunk_size)
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"the Triton mLSTM kernel takes fp16, bf16 or fp32 inputs, not {q.dtype}")
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape or i_pre.shape != q.shape[:3] or log_f.shape != q.shape[:3]:
        raise ValueError("mLSTM kernel: q, k, v must be (B, H, T, D) and the gates (B, H, T), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}, {tuple(i_pre.shape)}, {tuple(log_f.shape)}")
    k, v = k.to(q.dtype), v.to(q.dtype)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    h, c, n, m = _MLSTMChunkwise.apply(q, k, v, i_pre, log_f, seg, int(chunk_size))
    return h, (c, n, m)


# --------------------------------------------------------------------------------------------------
# ahead-of-time compile variants (tinylm.kernels.aot)

# Head dims of the shipped mLSTM configs: 48 (mlstm_tiny), 192 (mlstm_10m), 256 (mlstm_30m and the
# BabyLM mLSTM experiments), and 64 (the benchmark shape of issue 10).
AOT_HEAD_DIMS = (48, 64, 192, 256)
AOT_CHUNKS = (64,)  # model.mlstm_chunk_size of every shipped config (tinylm.ops.MLSTM_AUTO_CHUNKS)


def aot_variants(make, dtypes):
    """Every kernel for bf16 and fp16 inputs at every head dim and chunk size, with and without
    documents. fp32 is forced_only ("auto" keeps fp32 cells on the native form, see
    tinylm.ops.mlstm_suits_kernel; its IEEE dots spill) and only one representative (D64 with
    documents) per kernel is compiled: ptxas takes minutes per fp32 backward variant, which would
    make `make test-aot` hours long for shapes auto never launches."""
    out = []
    for act in ("bf16", "fp16", "fp32"):
        a = dtypes[act]
        prec = "ieee" if act == "fp32" else "tf32"
        forced = act == "fp32"
        for chunk in AOT_CHUNKS:
            warps = launch_warps(chunk)
            for D in AOT_HEAD_DIMS if not forced else (64,):
                BD = block_d(D)
                for has_seg in (False, True) if not forced else (True,):
                    seg = "*i32" if has_seg else "*fp32"
                    tag = f"{act} D{D} L{chunk}{' doc' if has_seg else ''}"
                    ce = dict(HAS_SEG=has_seg, CHUNK=chunk, BLOCK_D=BD, PRECISION=prec)
                    qkv = lambda *names: [(f"stride_{n}{s}", "i32") for n in names for s in "bht"]  # noqa: E731
                    common = [("H", "i32"), ("T", "i32"), ("NC", "i32"), ("D", "i32")]
                    out.append(make(
                        "mlstm", "_fwd_state_kernel", f"mlstm_fwd_state {tag}",
                        [("K", a), ("V", a), ("BCUM", "*fp32"), ("IGATE", "*fp32"), ("SEG", seg),
                         ("C_ST", "*fp32"), ("N_ST", "*fp32"), ("M_ST", "*fp32"), *qkv("k", "v"),
                         *common, ("scale", "fp32")], ce, warps, 2, forced, aligned=["D"]))
                    out.append(make(
                        "mlstm", "_fwd_out_kernel", f"mlstm_fwd_out {tag}",
                        [("Q", a), ("K", a), ("V", a), ("BCUM", "*fp32"), ("IGATE", "*fp32"), ("SEG", seg),
                         ("C_ST", "*fp32"), ("N_ST", "*fp32"), ("M_ST", "*fp32"), ("OUT", a),
                         ("M_ROW", "*fp32"), ("DEN", "*fp32"), *qkv("q", "k", "v", "o"),
                         *common, ("scale", "fp32")], ce, warps, 2, forced, aligned=["D"]))
                    out.append(make(
                        "mlstm", "_bwd_state_kernel", f"mlstm_bwd_state {tag}",
                        [("Q", a), ("DH", a), ("BCUM", "*fp32"), ("SEG", seg), ("M_ST", "*fp32"),
                         ("M_ROW", "*fp32"), ("INV_M", "*fp32"), ("DDEN", "*fp32"), ("DC_ST", "*fp32"),
                         ("DN_ST", "*fp32"), *qkv("q", "d"), *common], ce, warps, 2, forced, aligned=["D"]))
                    out.append(make(
                        "mlstm", "_bwd_chunk_kernel", f"mlstm_bwd_chunk {tag}",
                        [("Q", a), ("K", a), ("V", a), ("DH", a), ("BCUM", "*fp32"), ("IGATE", "*fp32"),
                         ("SEG", seg), ("C_ST", "*fp32"), ("N_ST", "*fp32"), ("M_ST", "*fp32"),
                         ("M_ROW", "*fp32"), ("INV_M", "*fp32"), ("DDEN", "*fp32"), ("DC_ST", "*fp32"),
                         ("DN_ST", "*fp32"), ("DQ", a), ("DK", a), ("DV", a), ("QDQ", "*fp32"),
                         ("KDK", "*fp32"), *qkv("q", "k", "v", "d"), *common, ("scale", "fp32")],
                        ce, warps, 2, forced, aligned=["D"]))
    return out
