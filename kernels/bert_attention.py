"""LTG-BERT's disentangled relative attention in Triton: the host side.

The kernels, and how they fuse the position terms into FlashAttention, are in
tinylm.kernels.bert_attention_kernels; this module builds the bucket tables they index, autotunes
and launches them (with the autotuning, Delta pass and span rule of tinylm.kernels.attention), wraps
them in an autograd Function (`relative_flash_attention`) and lists what `make test-aot` compiles.
"""

from __future__ import annotations

import torch
import triton

from tinylm.kernels.attention import (
    _KEY,
    _LOG2E,
    _autotuned,
    _last_dim_contiguous,
    _spans,
    _strides,
    backward_delta,
)
from tinylm.kernels.bert_attention_kernels import _rel_bwd_dkdv_kernel, _rel_bwd_dq_kernel, _rel_fwd_kernel

BKT_PAD = 128  # >= the largest BLOCK_M / BLOCK_N of any config
_EMPTY = 1 << 30  # distance bounds of a bucket no distance falls in: (+big, -big)


# --------------------------------------------------------------------------------------------------
# autotuning and launchers

_REL_KEY = _KEY + ["HAS_P2C", "BLOCK_R"]

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per class, BLOCK_M = queries, BLOCK_N = keys. Chosen by
# compiling for sm_80 and sm_90 (tinylm.kernels.aot) at BLOCK_R = 64 (R = 63 in every shipped
# config) and keeping configs without register spills. They are smaller than attention.py's:
# every tile also holds its bucket indices and gathered position terms, and the backward a
# (rows, BLOCK_R) accumulator with its segment-sum gathers; 64 x 64 tiles spill at 4 and 8 warps.
# The d128 and fp32 classes are reachable only with kernels=triton. The interpreter blocks are
# small and unequal so that the CPU tests cross block boundaries.
_fwd_kernel = _autotuned(_rel_fwd_kernel, {"BLOCK_M": 32, "BLOCK_N": 16}, {
    "d64": [(64, 32, 4, 3), (128, 32, 8, 3)],
    "d128": [(64, 32, 4, 2)],
    "fp32": [(32, 32, 4, 2)],
}, key=_REL_KEY, spills={"d64": {(128, 32, 8, 3): ("causal+pad",)}})
# dK/dV holds a (BLOCK_N, R) gradient accumulator for the position projections: the most registers.
# Spill-free per class by `make test-aot` (both position kinds, every mask): (64, 32, 8, 2) spills
# at head dim 32; at head dim 64 it and (32, 32, 8, 2) spill without masks (the simple sketch) and
# (64, 32, 8, 3) with causal masks.
_dkdv_kernel = _autotuned(_rel_bwd_dkdv_kernel, {"BLOCK_M": 16, "BLOCK_N": 32}, {
    "d32": [(32, 64, 8, 2), (32, 32, 8, 2)],
    "d64": [(64, 32, 8, 2), (32, 32, 8, 2), (64, 32, 8, 3)],
    "d128": [(32, 32, 4, 2)],
    "fp32": [(32, 32, 4, 2)],
}, key=_REL_KEY, spills={"d64": {
    (64, 32, 8, 2): ("none",), (32, 32, 8, 2): ("none",), (64, 32, 8, 3): ("causal+pad", "causal+doc"),
}})
_dq_kernel = _autotuned(_rel_bwd_dq_kernel, {"BLOCK_M": 32, "BLOCK_N": 16}, {
    "d64": [(32, 32, 4, 2), (32, 64, 8, 2)],
    "d128": [(32, 32, 4, 2)],
    "fp32": [(32, 32, 4, 2)],
}, key=_REL_KEY)


def _block_r(R: int) -> int:
    return max(16, triton.next_power_of_2(R))


def bucket_tables(rel_buckets: torch.Tensor, R: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the (2T - 1,) buckets of the distances d = -(T - 1) .. T - 1: the padded int32 table the
    kernels index at d (edge values repeated BKT_PAD times on each side), and per bucket the bounds
    (dlo, dhi) of its distances, (BLOCK_R,) int32 each, (+big, -big) for a bucket no distance falls
    in. Checks on the device (no host sync on CUDA) that buckets lie in [0, R) and that each one
    covers a single interval of distances, which the backward's segment sums rely on."""
    n = rel_buckets.numel()
    T = (n + 1) // 2
    table = rel_buckets.reshape(-1).long()
    device = table.device
    index = torch.arange(-BKT_PAD, n + BKT_PAD, device=device).clamp(0, n - 1)
    padded = table[index].to(torch.int32)
    BR = _block_r(R)
    d = torch.arange(n, device=device) - (T - 1)
    dlo = torch.full((BR,), _EMPTY, dtype=torch.long, device=device).scatter_reduce(0, table.clamp(0, BR - 1), d, "amin")
    dhi = torch.full((BR,), -_EMPTY, dtype=torch.long, device=device).scatter_reduce(0, table.clamp(0, BR - 1), d, "amax")
    count = torch.zeros(BR, dtype=torch.long, device=device).scatter_add_(0, table.clamp(0, BR - 1), torch.ones_like(d))
    ok = ((table >= 0) & (table < R)).all() & ((count == 0) | (count == dhi - dlo + 1)).all()
    torch._assert_async(ok, "relative buckets must lie in [0, R) and each cover one interval of distances")
    return padded, dlo.to(torch.int32), dhi.to(torch.int32)


def _common(q, R, kpm, doc, causal, has_p2c):
    return dict(
        HEAD_DIM=q.shape[-1], BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
        BLOCK_R=_block_r(R), BKT_PAD=BKT_PAD,
        IS_CAUSAL=bool(causal), HAS_KPM=kpm is not None, HAS_DOC=doc is not None,
        HAS_P2C=bool(has_p2c),
        PRECISION="tf32x3" if q.dtype == torch.float32 else "tf32",
    )


class _RelativeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, c2p, p2c, table, dlo, dhi, causal, kpm, doc, scale):
        q, k, v, c2p = (_last_dim_contiguous(t) for t in (q, k, v, c2p))
        has_p2c = p2c is not None
        p2c_arg = _last_dim_contiguous(p2c) if has_p2c else c2p  # a dummy, never read
        B, H, T, D = q.shape
        R = c2p.shape[-1]
        kspan = qspan = None
        if kpm is not None or doc is not None:
            kspan, qspan = _spans(kpm, doc, B, T, q.device)
        o = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((B * H, T), dtype=torch.float32, device=q.device)
        dummy = lse
        c = _common(q, R, kpm, doc, causal, has_p2c)
        _fwd_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
            q, k, v, c2p, p2c_arg, table, o, lse,
            kpm if kpm is not None else dummy, doc if doc is not None else dummy,
            kspan[0] if kspan is not None else dummy, kspan[1] if kspan is not None else dummy,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), *_strides(c2p), *_strides(p2c_arg),
            H, T, triton.next_power_of_2(T), scale * _LOG2E, **c,
        )
        ctx.save_for_backward(q, k, v, c2p, p2c, table, dlo, dhi, o, lse, kpm, doc, kspan, qspan)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, c2p, p2c, table, dlo, dhi, o, lse, kpm, doc, kspan, qspan = ctx.saved_tensors
        do = _last_dim_contiguous(do)
        B, H, T, D = q.shape
        R = c2p.shape[-1]
        has_p2c = p2c is not None
        p2c_arg = p2c if has_p2c else c2p
        c = _common(q, R, kpm, doc, ctx.causal, has_p2c)
        delta = backward_delta(o, do, c["BLOCK_D"])
        dq, dk, dv = (torch.empty((B, H, T, D), dtype=q.dtype, device=q.device) for _ in range(3))
        dc2p = torch.empty((B, H, T, R), dtype=c2p.dtype, device=q.device)
        dp2c = torch.empty((B, H, T, R), dtype=p2c.dtype, device=q.device) if has_p2c else dc2p
        dummy = delta
        kpm_arg = kpm if kpm is not None else dummy
        doc_arg = doc if doc is not None else dummy
        kspan = kspan if kspan is not None else (dummy, dummy)
        qspan = qspan if qspan is not None else (dummy, dummy)
        ins = (*_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(c2p), *_strides(p2c_arg))
        scalars = (H, T, R, triton.next_power_of_2(T), ctx.scale, ctx.scale * _LOG2E)
        _dkdv_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H)](
            q, k, v, c2p, p2c_arg, table, dlo, dhi, do, dk, dv, dp2c, lse, delta, kpm_arg, doc_arg,
            qspan[0], qspan[1], *ins, *_strides(dk), *scalars, **c,
        )
        _dq_kernel[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
            q, k, v, c2p, p2c_arg, table, dlo, dhi, do, dq, dc2p, lse, delta, kpm_arg, doc_arg,
            kspan[0], kspan[1], *ins, *_strides(dq), *scalars, **c,
        )
        return dq, dk, dv, dc2p, (dp2c if has_p2c else None), None, None, None, None, None, None, None


def relative_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    c2p: torch.Tensor,
    p2c: torch.Tensor | None,
    rel_buckets: torch.Tensor,
    scale: float,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    doc_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax((q k^T + c2p[i, r] + p2c[j, r]) * scale) v with r = rel_buckets[i - j + T - 1];
    same semantics as tinylm.ops.disentangled_attention_reference (without dropout).

    q, k, v (B, H, T, D); c2p, p2c (B, H, T, R) or anything that expands to it (a per-head bias:
    (1, H, 1, R)); p2c may be None. rel_buckets (2T - 1,) int in [0, R), each bucket one interval of
    distances. key_padding_mask (B, T) bool, True = real token; doc_ids (B, T) int. A query row
    that sees no key outputs zeros and gets zero gradients.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share a float16/bfloat16/float32 dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, T, D = q.shape
    if D > 128:
        raise ValueError(f"head dim up to 128 is supported, got {D}")
    R = c2p.shape[-1]
    c2p = c2p.expand(B, H, T, R)
    if p2c is not None:
        p2c = p2c.expand(B, H, T, R)
    if rel_buckets.shape != (2 * T - 1,):
        raise ValueError(f"rel_buckets must have 2 T - 1 = {2 * T - 1} entries, got {tuple(rel_buckets.shape)}")
    kpm = doc = None
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(device=q.device, dtype=torch.int8).expand(B, T).contiguous()
    if doc_ids is not None:
        doc = doc_ids.to(device=q.device, dtype=torch.int32).expand(B, T).contiguous()
    if q.numel() == 0:
        return torch.zeros_like(q).requires_grad_(q.requires_grad)
    table, dlo, dhi = bucket_tables(rel_buckets.to(q.device), R)
    return _RelativeAttention.apply(q, k, v, c2p, p2c, table, dlo, dhi, bool(causal), kpm, doc, float(scale))


# --------------------------------------------------------------------------------------------------
# ahead-of-time compile checks (tinylm.kernels.aot)

# Mask combinations BERT launches: masked-LM batches (none, padding, packed documents with or
# without padding) and the hybrid objective's causal rows.
AOT_MASKS = {
    "none": dict(IS_CAUSAL=False, HAS_KPM=False, HAS_DOC=False),
    "doc": dict(IS_CAUSAL=False, HAS_KPM=False, HAS_DOC=True),
    "pad": dict(IS_CAUSAL=False, HAS_KPM=True, HAS_DOC=False),
    "pad+doc": dict(IS_CAUSAL=False, HAS_KPM=True, HAS_DOC=True),
    "causal": dict(IS_CAUSAL=True, HAS_KPM=False, HAS_DOC=False),
    "causal+pad": dict(IS_CAUSAL=True, HAS_KPM=True, HAS_DOC=False),
    "causal+doc": dict(IS_CAUSAL=True, HAS_KPM=False, HAS_DOC=True),
}
# Head dims of the shipped BERT configs: 32 (bert_tiny), 64 (bert_10m, bert_30m, the BabyLM recipes).
AOT_HEAD_DIMS = (32, 64)
# (positions, R): LTG-BERT's c2p + p2c with 2 * 32 - 1 buckets, the simple sketch's fp32 per-head
# bias over 32 T5 buckets.
AOT_POSITIONS = {"ltg": (True, 63), "bias": (False, 32)}


def aot_variants(make, dtypes):
    """Every (dtype, head dim, mask, positions, autotune config) the BERT models can launch. fp32
    inputs are forced_only (auto keeps them on PyTorch), as for attention.py."""
    from tinylm.kernels.aot import _attention_configs

    out = []
    for act in ("bf16", "fp16", "fp32"):
        a = dtypes[act]
        for D in AOT_HEAD_DIMS:
            BLOCK_D = max(16, triton.next_power_of_2(D))
            for pos_name, (has_p2c, R) in AOT_POSITIONS.items():
                if not has_p2c and act == "fp16":
                    continue  # the bias path is the same code as bf16 with a fp32 table
                c = a if has_p2c else "*fp32"  # the simple sketch's bias is an fp32 parameter
                for mask_name, m in AOT_MASKS.items():
                    kpm = "*i8" if m["HAS_KPM"] else "*fp32"
                    doc = "*i32" if m["HAS_DOC"] else "*fp32"
                    span = "*i32" if (m["HAS_KPM"] or m["HAS_DOC"]) else "*fp32"
                    common = dict(HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_R=_block_r(R), BKT_PAD=BKT_PAD, **m,
                                  HAS_P2C=has_p2c, PRECISION="tf32x3" if act == "fp32" else "tf32")
                    fstrides = [f"stride_{t}{s}" for t in ("q", "k", "v", "o", "c", "p") for s in "bht"]
                    bstrides = [f"stride_{t}{s}" for t in ("q", "k", "v", "do", "c", "p", "g") for s in "bht"]
                    kernels = {
                        "_fwd_kernel": [
                            ("Q", a), ("K", a), ("V", a), ("C2P", c), ("P2C", c), ("BKT", "*i32"), ("O", a),
                            ("LSE", "*fp32"), ("KPM", kpm), ("DOC", doc), ("KSPAN_LO", span), ("KSPAN_HI", span),
                            *[(s, "i32") for s in fstrides],
                            ("H", "i32"), ("T", "i32"), ("T_BUCKET", "i32"), ("qk_scale", "fp32")],
                        "_dkdv_kernel": [
                            ("Q", a), ("K", a), ("V", a), ("C2P", c), ("P2C", c), ("BKT", "*i32"), ("DLO", "*i32"),
                            ("DHI", "*i32"), ("DO", a), ("DK", a), ("DV", a), ("DP2C", c), ("LSE", "*fp32"),
                            ("Delta", "*fp32"), ("KPM", kpm), ("DOC", doc), ("QSPAN_LO", span), ("QSPAN_HI", span),
                            *[(s, "i32") for s in bstrides],
                            ("H", "i32"), ("T", "i32"), ("R", "i32"), ("T_BUCKET", "i32"), ("sm_scale", "fp32"),
                            ("qk_scale", "fp32")],
                        "_dq_kernel": [
                            ("Q", a), ("K", a), ("V", a), ("C2P", c), ("P2C", c), ("BKT", "*i32"), ("DLO", "*i32"),
                            ("DHI", "*i32"), ("DO", a), ("DQ", a), ("DC2P", c), ("LSE", "*fp32"),
                            ("Delta", "*fp32"), ("KPM", kpm), ("DOC", doc), ("KSPAN_LO", span), ("KSPAN_HI", span),
                            *[(s, "i32") for s in bstrides],
                            ("H", "i32"), ("T", "i32"), ("R", "i32"), ("T_BUCKET", "i32"), ("sm_scale", "fp32"),
                            ("qk_scale", "fp32")],
                    }
                    # contiguous (B, H, T, D) sequence strides are D: divisible by 16 when D is (the
                    # (T, R) rows of c2p / p2c have an odd stride R = 63 and are not)
                    aligned = [s for s in fstrides + bstrides
                               if s.endswith("t") and s[7] not in "cp" and D % 16 == 0]
                    for attr, types in kernels.items():
                        tuner = globals()[attr]
                        fn_name = tuner.fn.__name__
                        for cfg in _attention_configs(tuner, act, D, m):
                            BM, BN = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
                            out.append(make(
                                "bert_attention", fn_name,
                                f"{fn_name} {act} D{D} {pos_name} {mask_name} M{BM} N{BN} w{cfg.num_warps} s{cfg.num_stages}",
                                types, {**common, "BLOCK_M": BM, "BLOCK_N": BN}, cfg.num_warps, cfg.num_stages,
                                act == "fp32", aligned=aligned))
    return out
