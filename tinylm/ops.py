"""The hot-path operations the models call, with one dispatch point.

`attention`, `disentangled_attention` (relative positions), `layer_norm`, `linear_cross_entropy` and
`mlstm_cell` run either the PyTorch reference (always available, the CPU path and
the test oracle) or the Triton kernels in kernels/ (installed as `tinylm.kernels`). Backends:

- "auto":   Triton for CUDA tensors when triton imports, PyTorch otherwise;
- "triton": forced (on CPU it works only under TRITON_INTERPRET=1, which the tests set);
- "torch":  the reference.

A whole run picks its backend with the config key `kernels=auto|triton|torch`, which the training
loop passes to `set_default_backend`.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from tinylm.errors import InputError
from tinylm.models import mlstm_cell as native_mlstm

BACKENDS = ("auto", "triton", "torch")
_default_backend = "auto"


def set_default_backend(backend: str, device: torch.device | None = None) -> None:
    """Set what backend="auto" resolves to for this process (the `kernels` config key). Given the
    run's device, kernels=triton on a machine without CUDA is rejected before anything runs."""
    global _default_backend
    if backend not in BACKENDS:
        raise InputError(f"kernels={backend!r} is not a backend; use one of {', '.join(BACKENDS)}")
    if backend == "triton" and device is not None:
        _check_triton_runs_on(device)
    _default_backend = backend


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_triton_runs_on(device: torch.device) -> None:
    """kernels=triton needs triton and a CUDA device (or the CPU interpreter the tests use)."""
    if not triton_available():
        raise InputError("kernels=triton but the triton package is not installed; "
                         "use kernels=auto or kernels=torch, or pip install triton")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError(f"kernels=triton needs a CUDA device, but this runs on {device.type} "
                         "(no CUDA device visible); use kernels=auto or kernels=torch")


def _resolve(backend: str, x: torch.Tensor, triton_suits: bool = True) -> str:
    """The backend to run; `triton_suits` says whether "auto" should pick Triton for this call."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not a backend; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = _default_backend
    if backend == "auto":
        return "triton" if x.is_cuda and triton_suits and triton_available() else "torch"
    if backend == "triton":
        _check_triton_runs_on(x.device)
    return backend


# --------------------------------------------------------------------------------------------------
# attention


# The head dims "auto" sends to the attention kernels: those `make test-aot` (tinylm.kernels.aot)
# compiles spill-free in every config and mask (the shipped configs' 32 and 64). Head dim 128 spills
# (the bf16 forward with a document mask in every config on sm_80), and any other head dim is a
# specialisation (its BLOCK_D) the check never compiled; they run only with kernels=triton.
ATTENTION_AUTO_HEAD_DIMS = (32, 64)


def attention_mask(
    T: int,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    doc_ids: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, T, T), True where query i may attend to key j; None if no mask."""
    mask = None
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
    if doc_ids is not None:  # (B, T): a token never attends across a document boundary
        same_doc = doc_ids[:, None, :, None] == doc_ids[:, None, None, :]
        mask = same_doc if mask is None else mask & same_doc
    if key_padding_mask is not None:  # (B, T), True = real token
        keep = key_padding_mask[:, None, None, :].bool()
        mask = keep if mask is None else mask & keep
    return mask


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    doc_ids: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """PyTorch attention. q, k, v: (B, H, T, D). Query rows with no visible key give zeros."""
    B, H, T, D = q.shape
    if key_padding_mask is None and doc_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    mask = attention_mask(T, causal, key_padding_mask, doc_ids, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    # SDPA gives NaN for a fully masked row (e.g. a left-padded query under a causal mask); the
    # kernels define that row's output as zero, and so does the reference.
    any_key = mask.any(dim=-1, keepdim=True)  # (B, 1, T, 1)
    return out.masked_fill(~any_key, 0.0)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    doc_ids: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Scaled dot-product attention over (B, H, T, D) tensors.

    key_padding_mask: (B, T) bool, True = real token (BERT batches).
    doc_ids: (B, T) int; a query attends only to keys of the same document (packed sequences).
    """
    # "auto" keeps fp32 attention on SDPA: the kernel's fp32 path (3-pass TF32) is for accuracy
    # checks, not speed. Training runs under bf16 autocast, so q, k, v arrive in bf16. Head dims
    # outside ATTENTION_AUTO_HEAD_DIMS stay on SDPA too.
    suits = q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in ATTENTION_AUTO_HEAD_DIMS
    if _resolve(backend, q, triton_suits=suits) == "triton":
        from tinylm.kernels.attention import flash_attention

        return flash_attention(q, k, v, causal, key_padding_mask, doc_ids, scale)
    return attention_reference(q, k, v, causal, key_padding_mask, doc_ids, scale)


# --------------------------------------------------------------------------------------------------
# relative-position attention (LTG-BERT's disentangled attention; a per-head bucket bias)

# Relative-position index counts R "auto" sends to the kernel: its backward holds a (block, R)
# accumulator and (block, R) gathers in registers, and the kernel is specialised on BLOCK_R =
# max(16, next_power_of_2(R)). `make test-aot` compiles BLOCK_R 64 (R = 63, LTG-BERT's log buckets)
# and 32 (R = 32, the simple bias) spill-free, so auto takes 17 <= R <= 64; fewer buckets (BLOCK_R
# 16, never compiled by the check) and more run on the reference. Head dims as ATTENTION_AUTO_HEAD_DIMS.
RELATIVE_AUTO_BUCKETS = range(17, 65)


def relative_index(rel_buckets: torch.Tensor, T: int) -> torch.Tensor:
    """(T, T) index rel_buckets[i - j + T - 1] of (query i, key j) from the (2T - 1,) table."""
    pos = torch.arange(T, device=rel_buckets.device)
    return rel_buckets[pos[:, None] - pos[None, :] + T - 1]


def disentangled_attention_reference(
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
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """PyTorch path of `disentangled_attention`: builds the (B, H, T, T) position bias and runs SDPA
    with it. Query rows with no visible key give zeros."""
    B, H, T, _ = q.shape
    R = c2p.shape[-1]
    index = relative_index(rel_buckets, T).expand(B, H, T, T)
    position = c2p.expand(B, H, T, R).gather(-1, index)
    if p2c is not None:  # p2c[j, r(i, j)]: gather along the keys' rows of p2c^T
        position = position + p2c.expand(B, H, T, R).transpose(-1, -2).gather(-2, index)
    position = position * scale
    allowed = attention_mask(T, causal, key_padding_mask, doc_ids, q.device)
    if allowed is not None:
        position = position.masked_fill(~allowed, float("-inf"))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=position.to(q.dtype), dropout_p=dropout_p, scale=scale)
    if allowed is not None:
        y = y.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    return y


def disentangled_attention(
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
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """softmax((q k^T + c2p[i, r] + p2c[j, r]) * scale) v over (B, H, T, D) q, k, v, with
    r = rel_buckets[i - j + T - 1] the relative index of (query i, key j).

    c2p (B, H, T, R) = q Kp^T and p2c (B, H, T, R) = k Qp^T are LTG-BERT's content-to-position and
    position-to-content terms; a per-head bucket bias is c2p = bias / scale of shape (1, H, 1, R)
    with p2c None. rel_buckets (2T - 1,) long, each bucket one interval of distances (log and T5
    buckets are). Masks as `attention`; dropout_p on the probabilities (PyTorch path only).
    """
    # "auto": the kernel for 16-bit inputs of the head dims and bucket counts whose kernels compile
    # without spills, and no dropout (the kernel has none); everything else on the reference.
    suits = (q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in ATTENTION_AUTO_HEAD_DIMS
             and c2p.shape[-1] in RELATIVE_AUTO_BUCKETS and dropout_p == 0.0)
    if _resolve(backend, q, triton_suits=suits) == "triton" and dropout_p == 0.0:
        from tinylm.kernels.bert_attention import relative_flash_attention

        return relative_flash_attention(q, k, v, c2p, p2c, rel_buckets, scale, causal, key_padding_mask, doc_ids)
    return disentangled_attention_reference(q, k, v, c2p, p2c, rel_buckets, scale, causal, key_padding_mask,
                                            doc_ids, dropout_p)


# --------------------------------------------------------------------------------------------------
# layer norm

# Widest rows "auto" sends to the kernel: the largest hidden sizes whose forward and backward compile
# without register spills for sm_80 and sm_90 (checked by `make test-aot`, tinylm.kernels.aot). A
# multiple of 16 lets the compiler vectorise and keeps the 8192-wide backward spill-free; other
# sizes spill above 4096. Wider rows (up to the kernel's 16384) run only with kernels=triton.
LAYER_NORM_AUTO_MAX_N = 8192
LAYER_NORM_AUTO_MAX_N_UNALIGNED = 4096


def layer_norm_suits_kernel(N: int) -> bool:
    """Whether "auto" runs a LayerNorm over rows of N elements in Triton (no register spills)."""
    return N <= (LAYER_NORM_AUTO_MAX_N if N % 16 == 0 else LAYER_NORM_AUTO_MAX_N_UNALIGNED)


def layer_norm_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
):
    """LayerNorm over the last dim; with `residual`, normalises x + residual and returns (y, sum)."""
    h = x if residual is None else x + residual
    y = F.layer_norm(h, h.shape[-1:], weight, bias, eps)
    return y if residual is None else (y, h)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
    backend: str = "auto",
):
    """LayerNorm with an optional fused residual add (see `layer_norm_reference`)."""
    # One row lives in registers in the kernel; wider rows stay on PyTorch under "auto".
    if _resolve(backend, x, triton_suits=layer_norm_suits_kernel(x.shape[-1])) == "triton":
        from tinylm.kernels.layer_norm import fused_layer_norm

        return fused_layer_norm(x, weight, bias, eps, residual)
    return layer_norm_reference(x, weight, bias, eps, residual)


# --------------------------------------------------------------------------------------------------
# the mLSTM cell

# What "auto" sends to the chunkwise mLSTM kernel (tinylm.kernels.mlstm): bf16/fp16 inputs (fp32
# runs IEEE dots, for accuracy checks), head dims that are multiples of 16 up to 256 (the shipped
# configs: 48, 192, 256), and chunk size 64 (every shipped config): the specialisations
# `make test-aot` compiles spill-free for sm_80 and sm_90 (kernels.mlstm.aot_variants). Other chunk
# sizes the kernel takes (16, 32, 128) run only with kernels=triton; everything else runs the
# model's own chunkwise form.
MLSTM_AUTO_MAX_HEAD_DIM = 256
MLSTM_AUTO_CHUNKS = (64,)


def mlstm_suits_kernel(head_dim: int, chunk_size: int, dtype: torch.dtype) -> bool:
    """Whether "auto" runs an mLSTM cell of this shape in Triton."""
    return (dtype in (torch.float16, torch.bfloat16) and head_dim % 16 == 0
            and head_dim <= MLSTM_AUTO_MAX_HEAD_DIM and chunk_size in MLSTM_AUTO_CHUNKS)


def mlstm_cell(q, k, v, i_pre, f_pre, form: str = "chunkwise", forget_gate: str = "sigmoid",
               chunk_size: int = 64, state=None, seg=None, backend: str = "auto"):
    """The mLSTM cell (tinylm.models.mlstm_cell.mlstm_cell, same arguments and results).

    The Triton kernel computes the chunkwise form from the empty memory: calls with another form
    or with a carried `state` (generation's recurrent steps) always run the model's own code, on
    every backend. The kernel's returned final state is detached (generation needs no gradient).
    """
    if form == "chunkwise" and state is None:
        suits = mlstm_suits_kernel(q.shape[-1], chunk_size, q.dtype)
        if _resolve(backend, q, triton_suits=suits) == "triton":
            from tinylm.kernels.mlstm import mlstm_chunkwise

            return mlstm_chunkwise(q, k, v, i_pre, native_mlstm.log_forget_gate(f_pre, forget_gate), seg, chunk_size)
    return native_mlstm.mlstm_cell(q, k, v, i_pre, f_pre, form, forget_gate, chunk_size, state, seg)


# --------------------------------------------------------------------------------------------------
# the output head and its cross-entropy


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (nats, fp32) of logits = hidden @ weight^T + bias over the targets that
    are not ignore_index, and the per-token losses (0 where ignored). hidden (..., C), targets (...)."""
    return _logits_cross_entropy(F.linear(hidden, weight, bias), targets, ignore_index)


def _logits_cross_entropy(logits, targets, ignore_index):
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least (bf16 autocast)
    per_token = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                ignore_index=ignore_index, reduction="none")
    n = (targets != ignore_index).sum().clamp(min=1)
    return per_token.sum() / n, per_token.view(targets.shape)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int = -100,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`linear_cross_entropy_reference`, fused and chunked on Triton (the (tokens, V) logits never
    exist; the per-token losses come back detached)."""
    if _resolve(backend, hidden) == "triton":
        from tinylm.kernels.fused_ce import fused_linear_cross_entropy

        return fused_linear_cross_entropy(hidden, weight, bias, targets, ignore_index)
    return linear_cross_entropy_reference(hidden, weight, bias, targets, ignore_index)


class _HiddenStates(torch.nn.Module):
    """Stands in for a model's output head for one call: returns the head's input unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def vocab_loss(
    model: torch.nn.Module,
    forward,
    targets: torch.Tensor,
    ignore_index: int = -100,
    need_logits: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training loss of a model that scores the vocabulary: (mean loss, per-token losses,
    logits or None).

    `forward()` calls `model` and returns (..., V) logits from its output head `model.head` (an
    nn.Linear). When the kernel path is chosen and the logits are not needed (`need_logits`, e.g.
    for distillation), the head is replaced by an identity for that one call, so `forward()`
    returns the head's input, and the head's matmul runs chunked inside the fused cross-entropy.
    """
    base = getattr(model, "_orig_mod", model)  # a torch.compile'd model's own module
    head = getattr(base, "head", None)
    fused = (not need_logits and isinstance(head, torch.nn.Linear)
             and _resolve(backend, head.weight) == "triton")
    if not fused:
        logits = forward()
        return (*_logits_cross_entropy(logits, targets, ignore_index), logits)
    base.head = _HiddenStates()
    try:
        hidden = forward()
    finally:
        base.head = head
    loss, per_token = linear_cross_entropy(hidden, head.weight, head.bias, targets, ignore_index, backend="triton")
    return loss, per_token, None
