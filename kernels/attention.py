"""FlashAttention for (B, H, T, D) tensors with causal, key-padding and document masks: the host side.

The Triton kernels, and the algorithm with its mask rules, are in tinylm.kernels.attention_kernels;
this module autotunes and launches them, computes the document spans they read, and wraps them in
an autograd Function (`flash_attention`). tinylm.kernels.bert_attention reuses its autotuning, the
backward's Delta pass and the span rule.
"""

from __future__ import annotations

import math
import os

import torch
import triton

from tinylm.kernels.attention_kernels import (
    _attn_bwd_dkdv_kernel,
    _attn_bwd_dq_kernel,
    _attn_fwd_kernel,
    _bwd_delta_kernel,
)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_LOG2E = 1.4426950408889634


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
