"""Fused LayerNorm kernel vs tinylm.ops.layer_norm_reference: y, the residual sum, and dx, dweight,
dbias, dresidual (the sum output receives its own gradient, which must reach x and residual).

The reference runs in float64 for fp32 inputs and in float32 for fp16/bf16 inputs.
"""

import pytest
import torch

from tinylm import ops
from tinylm.kernels import layer_norm as ln_mod
from tinylm.kernels.layer_norm import fused_layer_norm

# (atol, rtol): element-wise |got - ref| <= atol + rtol * |ref|. Statistics are fp32 everywhere;
# fp16/bf16 error is the rounding of the stored outputs (and of the fp16 sum x + residual).
TOL = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (6e-2, 3e-2),
}


def make_inputs(shape, dtype, device, residual, affine=(True, True), seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    N = shape[-1]
    x = rnd(*shape) * 2 + 0.5  # non-zero mean and non-unit variance
    r = rnd(*shape) if residual else None
    w = 1 + 0.5 * rnd(N) if affine[0] else None
    b = 0.3 * rnd(N) if affine[1] else None
    gy = rnd(*shape)
    gh = rnd(*shape) if residual else None
    return x, w, b, r, gy, gh


def run(fn, x, w, b, r, gy, gh, dtype=None):
    """Outputs and the grads of every input that exists, optionally in another dtype."""
    def cast(t):
        return t.detach().to(dtype or t.dtype).requires_grad_() if t is not None else None

    x, w, b, r = (cast(t) for t in (x, w, b, r))
    out = fn(x, w, b, r)
    y, h = out if r is not None else (out, None)
    loss = (y * gy.to(y.dtype)).sum()
    if h is not None:
        loss = loss + (h * gh.to(h.dtype)).sum()
    inputs = [t for t in (x, w, b, r) if t is not None]
    grads = torch.autograd.grad(loss, inputs)
    return [y] + ([h] if h is not None else []) + list(grads)


def assert_close(got, ref, dtype):
    atol, rtol = TOL[dtype]
    assert len(got) == len(ref)
    for i, (a, r) in enumerate(zip(got, ref)):
        assert a.dtype == dtype, f"output {i}: dtype {a.dtype} != {dtype}"
        assert a.shape == r.shape
        a, r = a.double(), r.double()
        assert torch.isfinite(a).all(), f"output {i}: non-finite"
        excess = ((a - r).abs() - (atol + rtol * r.abs())).max().item()
        assert excess <= 0, f"output {i}: max abs err {(a - r).abs().max().item():.3g}"


def check(shape, dtype, device, residual, affine=(True, True), eps=1e-5, fn=None):
    x, w, b, r, gy, gh = make_inputs(shape, dtype, device, residual, affine)
    fn = fn or (lambda x, w, b, r: fused_layer_norm(x, w, b, eps, r))
    got = run(fn, x, w, b, r, gy, gh)
    ref_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    ref = run(lambda x, w, b, r: ops.layer_norm_reference(x, w, b, eps, r),
              x, w, b, r, gy, gh, dtype=ref_dtype)
    assert_close(got, ref, dtype)
    return got


# Hidden sizes 37 and 100 (not powers of two: masked columns), 768; row counts 1, 15, 64, 130.
SHAPES = [(1, 37), (3, 5, 100), (64, 768), (130, 37), (2, 1, 256)]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_matches_reference(shape, dtype, residual, device):
    check(shape, dtype, device, residual)


@pytest.mark.parametrize("affine", [(False, False), (True, False), (False, True)],
                         ids=["no-affine", "weight-only", "bias-only"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_optional_weight_bias(affine, residual, device):
    check((9, 100), torch.float32, device, residual, affine)


@pytest.mark.parametrize("rows_per_tile", [1, 4])
def test_tile_shapes(rows_per_tile, monkeypatch, device):
    """Other (BLOCK_M, num_warps) choices than the default: partial last tiles, many programs,
    and every backward program walking several tiles."""
    launch = lambda N: (rows_per_tile, ln_mod.triton.next_power_of_2(N), 2)  # noqa: E731
    monkeypatch.setattr(ln_mod, "_fwd_launch", launch)
    monkeypatch.setattr(ln_mod, "_bwd_launch", launch)
    check((2, 13, 100), torch.float32, device, residual=True)


def test_eps_and_constant_rows(device):
    """A constant row has zero variance: rstd = 1/sqrt(eps), xhat = 0, finite grads."""
    x, w, b, r, gy, gh = make_inputs((4, 64), torch.float32, device, residual=False)
    x[1] = 3.0
    got = run(lambda x, w, b, r: fused_layer_norm(x, w, b, 1e-3), x, w, b, r, gy, gh)
    ref = run(lambda x, w, b, r: ops.layer_norm_reference(x, w, b, 1e-3), x, w, b, r, gy, gh,
              dtype=torch.float64)
    assert_close(got, ref, torch.float32)


def test_residual_sum_grad_reaches_both_inputs(device):
    """Gradient only through the sum output (y unused): dx = dresidual = d(sum)."""
    x, w, b, r, _, gh = make_inputs((6, 40), torch.float32, device, residual=True)
    x.requires_grad_()
    r.requires_grad_()
    _, h = fused_layer_norm(x, w, b, 1e-5, r)
    torch.testing.assert_close(h, x + r)
    dx, dr = torch.autograd.grad((h * gh).sum(), (x, r))
    assert torch.equal(dx, gh) and torch.equal(dr, gh)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dispatch_backend_triton(residual, device):
    """ops.layer_norm(backend="triton") is the kernel: bitwise equal to the direct call."""
    via_ops = check((2, 7, 100), torch.float32, device, residual,
                    fn=lambda x, w, b, r: ops.layer_norm(x, w, b, 1e-5, r, backend="triton"))
    direct = check((2, 7, 100), torch.float32, device, residual)
    for a, b_ in zip(via_ops, direct):
        assert torch.equal(a, b_)


def test_non_contiguous_input(device):
    x = torch.randn(37, 8, device=device).t()  # (8, 37) with row stride 1
    w = torch.randn(37, device=device)
    torch.testing.assert_close(fused_layer_norm(x, w, None),
                               ops.layer_norm_reference(x, w, None), atol=1e-5, rtol=1e-5)


# ---- GPU: bf16/fp16 at model sizes, real launch configs (multi-row tiles, many programs) ----

GPU_SHAPES = [(4096, 768), (8, 1000, 512), (512, 4096), (64, 8192), (3000, 37)]


@pytest.mark.gpu
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=["x".join(map(str, s)) for s in GPU_SHAPES])
def test_matches_reference_gpu(shape, dtype, residual):
    check(shape, dtype, "cuda", residual,
          fn=lambda x, w, b, r: ops.layer_norm(x, w, b, 1e-5, r, backend="triton"))
