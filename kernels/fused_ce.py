"""Fused linear cross-entropy: the output head, log-softmax, loss and gradients in row chunks, so
the (rows, V) logits never exist in memory at once.

For a chunk of R rows (R chosen so that R * V is about the size of the hidden states):
  1. logits = h @ W^T (+ b) with cuBLAS, in the compute dtype (bf16 under autocast);
  2. one Triton program per row streams over the V logits twice: an online max / sum-exp gives
     lse = log sum exp(logits) (fp32), the loss lse - logits[target]; then it overwrites the logits
     in place with their gradient (softmax - onehot(target)) / n_scored (zero for ignored rows);
  3. dh = dlogits @ W and dW += dlogits^T @ h (fp32 accumulator), db += column sums.
The gradients are computed during the forward (the loss is a scalar mean, so the backward only
scales them by the incoming gradient): the same recipe as Liger-Kernel's FusedLinearCrossEntropy.
Peak extra memory is one (R, V) chunk plus dW in fp32, instead of (rows, V) logits, their fp32
copy and their gradient.

n_scored (the mean's denominator) is read by the kernel from a device tensor, so no host sync.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def fused_ce_lse_grad_kernel(
    LOGITS, TARGETS, LOSS, INV_N,  # LOGITS: (R, V) row stride stride_row, overwritten by the grad;
    # TARGETS: (R,) int64; LOSS: (R,) fp32 per-row loss (0 if ignored); INV_N: (1,) fp32 1/n_scored
    stride_row, V, ignore_index,
    WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    LOGITS += row * stride_row
    target = tl.load(TARGETS + row)
    cols = tl.arange(0, BLOCK_V)

    # pass 1: running max m and sum of exp(x - m), in fp32
    m = tl.full((BLOCK_V,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for start in range(0, V, BLOCK_V):
        x = tl.load(LOGITS + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes that saw only -inf keep s = 0 (guard -inf - -inf)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.exp(x - m_safe)
        m = m_new
    m_row = tl.max(m, axis=0)
    lse = m_row + tl.log(tl.sum(s * tl.exp(m - m_row), axis=0))

    ignored = target == ignore_index
    safe_target = tl.where(ignored, 0, target)
    x_target = tl.load(LOGITS + safe_target).to(tl.float32)
    tl.store(LOSS + row, tl.where(ignored, 0.0, lse - x_target))

    if WRITE_GRAD:
        # pass 2: dlogits = (softmax - onehot) / n_scored, zero for an ignored row
        scale = tl.load(INV_N)
        scale = tl.where(ignored, 0.0, scale)
        for start in range(0, V, BLOCK_V):
            offs = start + cols
            ok = offs < V
            x = tl.load(LOGITS + offs, mask=ok, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) - tl.where(offs == safe_target, 1.0, 0.0)
            tl.store(LOGITS + offs, (g * scale).to(LOGITS.dtype.element_ty), mask=ok)


def _launch(V: int) -> tuple[int, int]:
    """(BLOCK_V, num_warps): 4096-wide blocks of 8 warps (16 fp32 per thread per live tensor)."""
    if _INTERPRET:
        return min(256, triton.next_power_of_2(V)), 1
    return min(4096, triton.next_power_of_2(V)), 8


def _chunk_rows(n_rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: the (R, V) chunk about as large as the (rows, C) hidden states, at least 1."""
    per = max(1, -(-vocab // max(hidden, 1)))  # ceil(V / C)
    return max(1, min(n_rows, triton.next_power_of_2(-(-n_rows // per))))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return x.dtype


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, chunk_rows, want_grad):
        # hidden (N, C), weight (V, C), bias (V,) or None, targets (N,) int64
        N, C = hidden.shape
        V = weight.shape[0]
        dtype = _compute_dtype(hidden)
        needs = ctx.needs_input_grad
        want_grad = want_grad and any(needs[:3])  # (grad mode is always off in here)
        with torch.autocast(hidden.device.type, enabled=False):
            h_all = hidden.to(dtype)
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            scored = targets != ignore_index
            inv_n = (1.0 / scored.sum().clamp(min=1).float()).reshape(1)  # stays on the device
            losses = torch.empty(N, dtype=torch.float32, device=hidden.device)
            dh = torch.empty_like(h_all) if want_grad and needs[0] else None
            dw = torch.zeros(V, C, dtype=torch.float32, device=hidden.device) if want_grad and needs[1] else None
            db = (torch.zeros(V, dtype=torch.float32, device=hidden.device)
                  if want_grad and bias is not None and needs[2] else None)
            R = chunk_rows or _chunk_rows(N, C, V)
            BLOCK_V, num_warps = _launch(V)
            for start in range(0, N, R):
                h = h_all[start:start + R]
                logits = h @ w.t()  # (r, V)
                if b is not None:
                    logits += b
                fused_ce_lse_grad_kernel[(h.shape[0],)](
                    logits, targets[start:start + R], losses[start:start + R], inv_n,
                    logits.stride(0), V, ignore_index,
                    WRITE_GRAD=want_grad, BLOCK_V=BLOCK_V, num_warps=num_warps,
                )
                if not want_grad:
                    continue
                dlogits = logits  # overwritten in place by the kernel
                if dh is not None:
                    torch.mm(dlogits, w, out=dh[start:start + R])
                if dw is not None:
                    dw += (dlogits.t() @ h).float()
                if db is not None:
                    db += dlogits.float().sum(0)
        loss = losses.sum() * inv_n[0]
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(losses)
        return loss, losses

    @staticmethod
    def backward(ctx, grad_loss, _grad_losses):
        dh, dw, db = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        out = []
        for g, dt in ((dh, h_dtype), (dw, w_dtype), (db, b_dtype)):
            out.append(None if g is None else (g * grad_loss).to(dt))
        return out[0], out[1], out[2], None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_rows: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of (hidden @ weight^T + bias) against targets over the rows whose target
    is not ignore_index, and the per-row losses (fp32, detached, 0 where ignored).

    hidden: (..., C); weight: (V, C); bias: (V,) or None; targets: (...) int. chunk_rows: rows per
    chunk (0 = about C * rows / V, the size of the hidden states). Same semantics as
    tinylm.ops.linear_cross_entropy_reference.
    """
    C = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != C:
        raise ValueError(f"weight must be (V, {C}), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must match hidden {tuple(hidden.shape[:-1])}")
    h2 = hidden.reshape(-1, C)
    t = targets.reshape(-1).to(torch.int64).contiguous()
    want_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias))
    loss, losses = _FusedLinearCrossEntropy.apply(h2, weight, bias, t, int(ignore_index), int(chunk_rows), want_grad)
    return loss, losses.view(targets.shape)


def aot_variants(make, dtypes):
    """The specialisations tinylm.kernels.aot compiles: every logits dtype, with and without grad."""
    BLOCK_V, warps = 4096, 8
    out = []
    for act in ("bf16", "fp16", "fp32"):
        for grad in (True, False):
            out.append(make(
                "fused_ce", "fused_ce_lse_grad_kernel", f"fused_ce_lse_grad_kernel {act}{'' if grad else ' no-grad'}",
                [("LOGITS", dtypes[act]), ("TARGETS", "*i64"), ("LOSS", "*fp32"), ("INV_N", "*fp32"),
                 ("stride_row", "i32"), ("V", "i32"), ("ignore_index", "i32")],
                dict(WRITE_GRAD=grad, BLOCK_V=BLOCK_V), warps, 3))
    return out
