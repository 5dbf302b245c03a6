"""The chunkwise mLSTM kernel (tinylm.kernels.mlstm) against the model's three native forms and a
float64 reference: outputs, the final state, and the gradients of q, k, v and both gate
pre-activations, with document resets and both forget gate kinds; the tinylm.ops routing; and the
mLSTM model with kernels=triton against kernels=torch.

On CPU the kernel runs under TRITON_INTERPRET=1 (tests/conftest.py) with tiny shapes and chunks of
4-8 tokens, so that a few tokens already span several chunks; the @pytest.mark.gpu test repeats the
comparison in bf16 at the shipped chunk size.
"""

import pytest
import torch

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.kernels import mlstm as kmod
from tinylm.models import build_model
from tinylm.models.mlstm_cell import FORMS, log_forget_gate, mlstm_cell, segments

# |got - ref| <= TOL * (1 + |ref|) elementwise (as tests/test_mlstm.py). fp32 kernel vs float64:
# the worst seen on these cases is ~3e-5, in the forget-gate gradient, which sums q.dq - k.dk over
# the rest of the sequence.
TOL = 2e-4


def rel_err(got, ref):
    return ((got.double() - ref.double()).abs() / (1 + ref.double().abs())).max().item()


def make_inputs(B, H, T, D, forget, doc_starts, i_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))
    i_pre = torch.randn(B, H, T, generator=g, dtype=torch.float64) * i_scale
    f_pre = torch.randn(B, H, T, generator=g, dtype=torch.float64) + (3.0 if forget == "sigmoid" else -0.2)
    seg = None
    if doc_starts:
        ids = torch.zeros(B, T, dtype=torch.long)
        for b in range(B):
            for p in doc_starts:
                if p + b < T:
                    ids[b, p + b:] += 1  # row b: the same boundaries shifted by b
        seg = segments(ids)
    dh = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    return (q, k, v, i_pre, f_pre), seg, dh


def native_grads(inputs, seg, dh, forget, form, chunk, dtype):
    leaves = [x.to(dtype).clone().requires_grad_() for x in inputs]
    h, _ = mlstm_cell(*leaves, form=form, forget_gate=forget, chunk_size=chunk, seg=seg)
    (h * dh.to(dtype)).sum().backward()
    return [h.detach()] + [x.grad for x in leaves]


def kernel_grads(inputs, seg, dh, forget, chunk):
    leaves = [x.float().clone().requires_grad_() for x in inputs]
    q, k, v, i_pre, f_pre = leaves
    h, state = kmod.mlstm_chunkwise(q, k, v, i_pre, log_forget_gate(f_pre, forget), seg, chunk)
    (h * dh.float()).sum().backward()
    return [h.detach()] + [x.grad for x in leaves], state


NAMES = ("h", "dq", "dk", "dv", "di", "df")
# (B, H, T, D, chunk, forget gate, document starts, input-gate scale)
CASES = {
    "T13-not-a-multiple": (2, 2, 13, 8, 4, "sigmoid", (), 1.0),
    "T1": (1, 2, 1, 8, 4, "exp", (), 1.0),
    "docs-mid-and-at-boundary": (2, 1, 16, 8, 4, "sigmoid", (4, 6, 11), 1.0),
    "D20-masked-tile-exp-docs": (1, 2, 21, 20, 8, "exp", (5, 16), 3.0),
    "D70-two-tiles": (1, 1, 11, 70, 8, "sigmoid", (3,), 1.0),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kernel_matches_float64_and_the_native_forms(case):
    B, H, T, D, chunk, forget, docs, i_scale = CASES[case]
    inputs, seg, dh = make_inputs(B, H, T, D, forget, docs, i_scale)
    got, state = kernel_grads(inputs, seg, dh, forget, chunk)
    refs = {"float64": native_grads(inputs, seg, dh, forget, "parallel", chunk, torch.float64)}
    for form in FORMS:
        refs[form] = native_grads(inputs, seg, dh, forget, form, chunk, torch.float32)
    for ref_name, ref in refs.items():
        for name, a, b in zip(NAMES, got, ref):
            err = rel_err(a, b)
            assert err <= TOL, f"{name} vs {ref_name}: relative error {err:.2e}"
    # the state after the last token continues the sequence exactly as the native one does
    with torch.no_grad():
        q, k, v, i_pre, f_pre = inputs
        _, ref_state = mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", forget, chunk, seg=seg)
    for a, b in zip(state, ref_state):
        assert rel_err(a, b) <= TOL


def test_gate_gradients_are_not_trivially_small():
    """The gate gradients compared above carry signal (so the comparison can fail): a wrong sign
    in the log-sigmoid derivative or a reverse cumsum off by one position is far outside TOL."""
    inputs, seg, dh = make_inputs(1, 1, 12, 8, "sigmoid", (5,))
    got, _ = kernel_grads(inputs, seg, dh, "sigmoid", 4)
    ref = native_grads(inputs, seg, dh, "sigmoid", "parallel", 4, torch.float64)
    assert ref[4].abs().max() > 0.1 and ref[5].abs().max() > 1e-3
    shifted = torch.roll(got[5], 1, dims=-1)
    assert rel_err(shifted, ref[5]) > 10 * TOL
    assert rel_err(got[5], ref[5]) <= TOL


def test_ops_routing():
    inputs, seg, _ = make_inputs(1, 2, 9, 16, "sigmoid", (4,))
    q, k, v, i_pre, f_pre = (x.float() for x in inputs)
    ref, ref_state = mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid", 4, seg=seg)
    for backend in ("torch", "auto", "triton"):  # auto on CPU tensors: the native form
        h, state = ops.mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid", 4, seg=seg, backend=backend)
        assert rel_err(h, ref) <= TOL and rel_err(state[0], ref_state[0]) <= TOL
    # a carried state or another form always runs the native code, even with kernels=triton
    h1, st = ops.mlstm_cell(q[:, :, :5], k[:, :, :5], v[:, :, :5], i_pre[:, :, :5], f_pre[:, :, :5],
                            chunk_size=4, backend="triton")
    h2, _ = ops.mlstm_cell(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], i_pre[:, :, 5:], f_pre[:, :, 5:],
                           chunk_size=4, state=st, backend="triton")
    whole, _ = mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid", 4)
    assert rel_err(torch.cat([h1, h2], 2), whole) <= TOL
    h, state = ops.mlstm_cell(q, k, v, i_pre, f_pre, "parallel", backend="triton")
    assert state is None
    with pytest.raises(ValueError, match="chunk sizes"):
        ops.mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid", 6, backend="triton")
    assert ops.mlstm_suits_kernel(256, 64, torch.bfloat16) and ops.mlstm_suits_kernel(48, 64, torch.float16)
    assert not ops.mlstm_suits_kernel(64, 64, torch.float32)  # fp32: IEEE dots, forced only
    assert not ops.mlstm_suits_kernel(64, 48, torch.bfloat16)  # no compiled chunk of 48
    assert not ops.mlstm_suits_kernel(64, 32, torch.bfloat16)  # compiles, but not AOT-checked
    # auto routes only what `make test-aot` checks (kernels.mlstm.aot_variants)
    assert set(ops.MLSTM_AUTO_CHUNKS) <= set(kmod.AOT_CHUNKS)
    assert all(ops.mlstm_suits_kernel(D, 64, torch.bfloat16) for D in kmod.AOT_HEAD_DIMS)
    assert not ops.mlstm_suits_kernel(320, 64, torch.bfloat16)


@pytest.fixture
def backend_restored():
    yield
    ops.set_default_backend("auto")


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_mlstm_model_with_triton_kernels_equals_torch(forget, backend_restored):
    """model=mlstm forward + backward (every parameter's gradient) with kernels=triton (the mLSTM,
    LayerNorm and attention kernels, interpreted) equals kernels=torch, with document resets."""
    torch.manual_seed(0)
    cfg = ModelConfig(family="mlstm", vocab_size=61, n_layer=2, n_head=2, d_model=32, max_seq_len=64,
                      mlstm_chunk_size=8, mlstm_forget_gate=forget)
    model = build_model(cfg)
    with torch.no_grad():  # random gates: at init (zero gate weights) the gates would carry no signal
        for name, p in model.named_parameters():
            if "gates" in name:
                p.add_(torch.randn_like(p) * 0.5)
    ids = torch.randint(0, 61, (2, 19), generator=torch.Generator().manual_seed(1))
    doc_ids = torch.zeros(2, 19, dtype=torch.long)
    doc_ids[0, 8:] = 1  # a boundary at a chunk start
    doc_ids[1, 5:] = 1  # and one inside a chunk
    out = {}
    for backend in ("torch", "triton"):
        ops.set_default_backend(backend)
        model.zero_grad()
        logits = model(ids, doc_ids)
        torch.nn.functional.cross_entropy(logits.view(-1, 61), ids.view(-1)).backward()
        out[backend] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-4, atol=1e-5)
    for name, grad in out["torch"][1].items():
        torch.testing.assert_close(out["triton"][1][name], grad, rtol=1e-3, atol=1e-5, msg=name)
    assert any(g.abs().max() > 0 for n, g in out["torch"][1].items() if "gates" in n)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 256])
def test_gpu_kernel_matches_native_fp32(dtype, D):
    """On the GPU, at the shipped chunk size and a few chunks with documents: the bf16/fp16 kernel
    against the native chunkwise form in fp32 (the kernel rounds scores and states to the input
    dtype before its matmuls, like any flash-style kernel)."""
    B, H, T = 2, 3, 300
    inputs, seg, dh = make_inputs(B, H, T, D, "sigmoid", (100, 128, 200))
    inputs = [x.cuda() for x in inputs]
    seg, dh = seg.cuda(), dh.cuda()
    ref = native_grads(inputs, seg, dh, "sigmoid", "chunkwise", 64, torch.float32)
    leaves = [x.to(dtype).clone().requires_grad_() if j < 3 else x.float().clone().requires_grad_()
              for j, x in enumerate(inputs)]
    h, _ = ops.mlstm_cell(*leaves, "chunkwise", "sigmoid", 64, seg=seg, backend="triton")
    (h.float() * dh.float()).sum().backward()
    got = [h.detach()] + [x.grad for x in leaves]
    for name, a, b in zip(NAMES, got, ref):
        scale = b.abs().max().item()
        err = (a.float() - b).abs().max().item() / scale
        assert err <= (3e-2 if dtype == torch.bfloat16 else 6e-3), f"{name}: error {err:.2e} of max {scale:.2e}"
