"""FlashAttention kernel vs tinylm.ops.attention_reference: output and dq, dk, dv.

On CPU the kernels run under TRITON_INTERPRET=1 (see conftest.py), so shapes stay small; the
@pytest.mark.gpu tests repeat the comparison in bf16/fp16 at longer sequence lengths.
The reference runs in float64 for fp32 inputs and in float32 for fp16/bf16 inputs.
"""

import pytest
import torch
import triton

from tinylm import ops
from tinylm.kernels import attention as attn_mod
from tinylm.kernels.attention import flash_attention

# Per-dtype (atol, rtol): element-wise |got - ref| <= atol + rtol * |ref|. fp32 dots run in
# IEEE fp32 (no TF32) on every device; fp16/bf16 round P and dS to the input dtype before the
# second matmul, exactly like any FlashAttention, which dominates their error. (On CPU the worst
# case uses ~5% of the fp32 and ~30% of the fp16 budget.) Long GPU sequences sum more rounded
# terms into dk/dv, hence the looser GPU_TOL (PyTorch's own bf16/fp16 attention uses ~10-15% of
# it on the GPU_CASES).
TOL = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
}
GPU_TOL = {
    torch.float32: (1e-4, 1e-4),  # 3xTF32 dots on GPU
    torch.float16: (6e-3, 6e-3),
    torch.bfloat16: (4e-2, 4e-2),
}


def make_masks(kind: str, B: int, T: int, device, seed: int = 0):
    """key_padding_mask / doc_ids for a mask kind; 'pad' = left padding on row 0 (long enough to
    fully mask its first causal rows) and right padding on the last row; 'doc' = documents with
    boundaries inside every row (non-decreasing ids, as in packed sequences); 'mixdoc' = ids in
    random order (incl. negative), which the kernel must handle, only without skipping."""
    g = torch.Generator().manual_seed(seed)
    kpm = doc = None
    if "pad" in kind:
        kpm = torch.ones(B, T, dtype=torch.bool)
        kpm[0, : max(1, T // 3)] = False
        if B > 1:
            kpm[-1, T - T // 4 :] = False
    if "mixdoc" in kind:
        doc = torch.randint(-2, 2, (B, T), generator=g)
    elif "doc" in kind:
        doc = torch.zeros(B, T, dtype=torch.long)
        for b in range(B):
            if T > 1:
                for cut in torch.randint(1, T, (3,), generator=g).tolist():
                    doc[b, cut:] += 1
    to = lambda t: t.to(device) if t is not None else None  # noqa: E731
    return to(kpm), to(doc)


def make_inputs(B, H, T, D, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, go = (torch.randn(B, H, T, D, generator=g).to(device, dtype) for _ in range(4))
    return q, k, v, go


def reference(q, k, v, go, causal, kpm, doc, scale=None):
    ref_dtype = torch.float64 if q.dtype == torch.float32 else torch.float32
    qr, kr, vr = (t.detach().to(ref_dtype).requires_grad_() for t in (q, k, v))
    o = ops.attention_reference(qr, kr, vr, causal, kpm, doc, scale)
    return (o, *torch.autograd.grad(o, (qr, kr, vr), go.to(ref_dtype)))


def run(fn, q, k, v, go):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    o = fn(q, k, v)
    return (o, *torch.autograd.grad(o, (q, k, v), go))


def assert_close(got, ref, dtype, tol=TOL, names=("out", "dq", "dk", "dv")):
    atol, rtol = tol[dtype]
    for name, a, r in zip(names, got, ref):
        assert a.dtype == dtype, f"{name}: dtype {a.dtype} != input dtype {dtype}"
        assert a.shape == r.shape, name
        a, r = a.double(), r.double()
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        excess = ((a - r).abs() - (atol + rtol * r.abs())).max().item()
        err = (a - r).abs().max().item()
        assert excess <= 0, f"{name}: max abs err {err:.3g} beyond tol ({atol}, {rtol})"


# (B, H, T, D, causal, mask kind): awkward lengths (1, 50, 129 = two blocks + 1), batch 1, every
# mask kind, head dims 16..128 (and a non power of two); D=128 only at small T to stay cheap on CPU.
CASES = [
    (1, 1, 1, 32, True, "none"),
    (2, 2, 50, 32, False, "none"),
    (2, 2, 50, 64, True, "none"),
    (1, 2, 129, 32, True, "none"),
    (2, 1, 129, 64, False, "pad"),
    (2, 1, 129, 32, True, "pad"),
    (2, 1, 129, 32, False, "doc"),
    (2, 1, 129, 32, True, "doc"),
    (2, 1, 129, 32, False, "pad+doc"),
    (2, 1, 129, 32, True, "pad+doc"),
    (2, 1, 70, 32, True, "pad+mixdoc"),
    (1, 1, 40, 128, True, "none"),
    (1, 1, 33, 16, False, "doc"),
    (1, 1, 50, 48, True, "pad"),
]


def _id(case):
    B, H, T, D, causal, kind = case
    return f"B{B}H{H}T{T}D{D}-{'causal' if causal else 'bidir'}-{kind}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_reference(case, dtype, device):
    B, H, T, D, causal, kind = case
    q, k, v, go = make_inputs(B, H, T, D, dtype, device)
    kpm, doc = make_masks(kind, B, T, device)
    got = run(lambda q, k, v: flash_attention(q, k, v, causal, kpm, doc, None), q, k, v, go)
    assert_close(got, reference(q, k, v, go, causal, kpm, doc), dtype)


@pytest.mark.parametrize("causal", [False, True])
def test_dispatch_backend_triton(causal, device):
    """ops.attention(backend="triton") is the kernel: bitwise equal to the direct call."""
    B, H, T, D = 2, 2, 70, 32
    q, k, v, go = make_inputs(B, H, T, D, torch.float32, device, seed=1)
    kpm, doc = make_masks("pad+doc", B, T, device, seed=1)
    via_ops = run(lambda q, k, v: ops.attention(q, k, v, causal, kpm, doc, backend="triton"),
                  q, k, v, go)
    direct = run(lambda q, k, v: flash_attention(q, k, v, causal, kpm, doc, None), q, k, v, go)
    for a, b in zip(via_ops, direct):
        assert torch.equal(a, b)
    assert_close(via_ops, reference(q, k, v, go, causal, kpm, doc), torch.float32)


def test_fully_masked_rows_get_zeros(device):
    """A batch row with no real token, and left-padded causal rows, output 0 and get 0 grads."""
    B, H, T, D = 2, 2, 40, 32
    q, k, v, go = make_inputs(B, H, T, D, torch.float32, device, seed=2)
    kpm = torch.ones(B, T, dtype=torch.bool, device=device)
    kpm[0] = False  # nothing to attend to at all
    kpm[1, :10] = False  # causal rows 0..9 of batch 1 see no key
    o, dq, dk, dv = run(lambda q, k, v: flash_attention(q, k, v, True, kpm), q, k, v, go)
    for t in (o, dq, dk, dv):
        assert torch.equal(t[0], torch.zeros_like(t[0]))
    for t in (o, dq):
        assert torch.equal(t[1, :, :10], torch.zeros_like(t[1, :, :10]))
    for t in (dk, dv):  # padded keys receive no gradient
        assert torch.equal(t[1, :, :10], torch.zeros_like(t[1, :, :10]))
    assert_close((o, dq, dk, dv), reference(q, k, v, go, True, kpm, None), torch.float32)


def test_strided_inputs_and_scale(device):
    """q, k, v and dO as non-contiguous views of (B, T, H, D) buffers, and an explicit scale."""
    B, H, T, D = 2, 3, 45, 32
    g = torch.Generator().manual_seed(3)
    q, k, v, go = (torch.randn(B, T, H, D, generator=g).to(device).transpose(1, 2)
                   for _ in range(4))
    assert not q.is_contiguous()
    kpm, doc = make_masks("doc", B, T, device, seed=3)
    got = run(lambda q, k, v: flash_attention(q, k, v, True, kpm, doc, scale=0.3), q, k, v, go)
    assert_close(got, reference(q, k, v, go, True, kpm, doc, scale=0.3), torch.float32)


def test_invisible_blocks_are_never_read(device):
    """Block skipping: keys 128..255 are padding filled with NaN. Every BLOCK_N (<= 128) key block
    there holds no real key, so it must be skipped, never loaded: any read would turn the output
    NaN. Documents [0]*128 + [1]*128 leave queries 128.. with no visible key at all."""
    B, H, T, D = 1, 1, 256, 32
    q, k, v, go = make_inputs(B, H, T, D, torch.float32, device, seed=4)
    kpm = torch.ones(B, T, dtype=torch.bool, device=device)
    kpm[:, 128:] = False
    doc = (torch.arange(T, device=device) >= 128).long()[None]
    ref = reference(q, k, v, go, False, kpm, doc)  # on the clean inputs
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[..., 128:, :] = float("nan")
    v_bad[..., 128:, :] = float("nan")
    got = run(lambda q, k, v: flash_attention(q, k, v, False, kpm, doc), q, k_bad, v_bad, go)
    assert_close(got, ref, torch.float32)


# (fwd, dkdv, dq) (BLOCK_M, BLOCK_N): the smallest tiles, the GPU shapes, and BLOCK_M > BLOCK_N
# vs BLOCK_M < BLOCK_N the other way round from the default interpreter config.
BLOCKS = [((16, 16), (16, 16), (16, 16)), ((128, 64), (32, 128), (128, 32)),
          ((32, 64), (64, 32), (32, 64))]


@pytest.mark.parametrize("blocks", BLOCKS, ids=["16", "gpu-like", "swapped"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_block_sizes_do_not_matter(blocks, causal, monkeypatch, device):
    """The loop ranges (causal split, span skipping, tails) are right for any tile shape."""
    raw = (attn_mod._attn_fwd_kernel, attn_mod._attn_bwd_dkdv_kernel, attn_mod._attn_bwd_dq_kernel)
    for name, kernel, (bm, bn) in zip(("_fwd_kernel", "_dkdv_kernel", "_dq_kernel"), raw, blocks):
        config = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1)
        monkeypatch.setattr(attn_mod, name, triton.autotune([config], key=attn_mod._KEY)(kernel))
    B, H, T, D = 2, 1, 100, 32
    q, k, v, go = make_inputs(B, H, T, D, torch.float32, device, seed=5)
    kpm, doc = make_masks("pad+doc", B, T, device, seed=5)
    got = run(lambda q, k, v: flash_attention(q, k, v, causal, kpm, doc), q, k, v, go)
    assert_close(got, reference(q, k, v, go, causal, kpm, doc), torch.float32)


def test_spans_cover_every_visible_key():
    """The span rule: per query, [first, last] real key of its document (exact for packed ids);
    per key, the queries of its document; empty spans as (T, -1)."""
    kpm = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.int8)
    doc = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2], [5, -1, 5, 3, -1, 5, 3, 3]], dtype=torch.int32)
    kspan, qspan = attn_mod._spans(kpm, doc, 2, 8, "cpu")
    assert kspan[:, 0].T.tolist() == [[1, 1], [1, 1], [2, 4], [2, 4], [2, 4], [5, 6], [5, 6],
                                      [5, 6]]
    assert qspan[:, 0].T.tolist() == [[8, -1], [0, 1], [2, 4], [2, 4], [2, 4], [5, 7], [5, 7],
                                      [8, -1]]
    # row 1, interleaved ids: spans still cover every same-document key
    assert kspan[:, 1].T.tolist() == [[0, 5], [1, 4], [0, 5], [3, 7], [1, 4], [0, 5], [3, 7],
                                      [3, 7]]
    assert torch.equal(kspan[:, 1], qspan[:, 1])  # no padding: symmetric


def test_rejects_bad_shapes(device):
    q = torch.zeros(1, 1, 8, 32, device=device)
    with pytest.raises(ValueError):
        flash_attention(q, q[..., :16], q, False)
    with pytest.raises(ValueError):
        flash_attention(torch.zeros(1, 1, 8, 256, device=device), *[torch.zeros(1, 1, 8, 256)] * 2)


# ---- GPU: bf16/fp16 at real lengths (autotuned configs, multi-block causal splits) ----

GPU_CASES = [
    (2, 4, 1000, 64, True, "pad+doc"),
    (2, 4, 2048, 64, True, "doc"),
    (1, 2, 512, 128, False, "pad"),
    (2, 3, 777, 32, True, "pad"),
    (4, 4, 256, 64, False, "none"),
    (1, 2, 1024, 128, True, "none"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32],
                         ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[_id(c) for c in GPU_CASES])
def test_matches_reference_gpu(case, dtype):
    B, H, T, D, causal, kind = case
    q, k, v, go = make_inputs(B, H, T, D, dtype, "cuda")
    kpm, doc = make_masks(kind, B, T, "cuda")
    got = run(lambda q, k, v: ops.attention(q, k, v, causal, kpm, doc, backend="triton"),
              q, k, v, go)
    assert_close(got, reference(q, k, v, go, causal, kpm, doc), dtype, GPU_TOL)
