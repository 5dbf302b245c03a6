"""Fused linear cross-entropy (kernels/fused_ce.py) vs a float64 PyTorch reference: the mean loss,
the per-token losses and the gradients of hidden, weight and bias, on awkward shapes (V not a
multiple of the kernel's block, rows not a multiple of the chunk, ignored targets); and the
training-loss path tinylm.ops.vocab_loss, which swaps a model's head out for the fused loss."""

import pytest
import torch

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.kernels.fused_ce import fused_linear_cross_entropy
from tinylm.models import build_model

IGNORE = -100


def make_case(lead, C, V, bias, seed=0, ignore_share=0.3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*lead, C, generator=g)
    weight = torch.randn(V, C, generator=g) * 0.5
    b = torch.randn(V, generator=g) if bias else None
    targets = torch.randint(0, V, lead, generator=g)
    targets[torch.rand(lead, generator=g) < ignore_share] = IGNORE
    return hidden, weight, b, targets


def loss_and_grads(fn, hidden, weight, bias, targets, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() for t in (hidden, weight) + ((bias,) if bias is not None else ())]
    h, w = leaves[:2]
    b = leaves[2] if bias is not None else None
    loss, per_token = fn(h, w, b, targets)
    grads = torch.autograd.grad(loss * 1.7, leaves)  # a non-unit upstream gradient
    return loss.detach(), per_token.detach(), grads


@pytest.mark.parametrize("lead,C,V,bias,chunk_rows", [
    ((3, 13), 24, 300, True, 8),     # V > one interpreter block, 39 rows in chunks of 8 (ragged tail)
    ((1, 37), 16, 77, False, 0),     # V < one block, default chunking
    ((2, 5), 32, 513, True, 1),      # V = 2 blocks + 1, one row per chunk
])
def test_loss_and_grads_match_float64(lead, C, V, bias, chunk_rows):
    hidden, weight, b, targets = make_case(lead, C, V, bias)
    fused = loss_and_grads(lambda h, w, bb, t: fused_linear_cross_entropy(h, w, bb, t, IGNORE, chunk_rows),
                           hidden, weight, b, targets, torch.float32)
    ref = loss_and_grads(lambda h, w, bb, t: ops.linear_cross_entropy_reference(h, w, bb, t, IGNORE),
                         hidden, weight, b, targets, torch.float64)
    torch.testing.assert_close(fused[0].double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[1].double(), ref[1], rtol=1e-5, atol=1e-5)
    assert (fused[1][targets == IGNORE] == 0).all()
    for name, got, want in zip(("hidden", "weight", "bias"), fused[2], ref[2]):
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6, msg=name)


def test_every_target_ignored_gives_zero_loss_and_grads():
    hidden, weight, b, targets = make_case((2, 6), 8, 40, True)
    targets[:] = IGNORE
    loss, per_token, grads = loss_and_grads(lambda h, w, bb, t: fused_linear_cross_entropy(h, w, bb, t, IGNORE, 4),
                                            hidden, weight, b, targets, torch.float32)
    assert loss.item() == 0 and (per_token == 0).all()
    assert all((g == 0).all() for g in grads)


def test_no_grad_forward_gives_the_loss():
    hidden, weight, b, targets = make_case((2, 9), 8, 70, False)
    with torch.no_grad():
        loss, _ = fused_linear_cross_entropy(hidden, weight, None, targets, IGNORE, 5)
    ref, _ = ops.linear_cross_entropy_reference(hidden.double(), weight.double(), None, targets, IGNORE)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_vocab_loss_swaps_the_head_and_matches_the_plain_loss(kind):
    """The training path: same loss and parameter grads as logits + F.cross_entropy, head restored
    (GPT: tied head without bias; BERT: head with bias after its dense + LayerNorm)."""
    torch.manual_seed(0)
    if kind == "gpt":
        cfg = ModelConfig(vocab_size=70, n_layer=1, n_head=2, d_model=16, max_seq_len=12)
    else:
        cfg = ModelConfig(family="bert", vocab_size=70, n_layer=1, n_head=2, d_model=16, max_seq_len=12, bert_rel_buckets=8)
    model = build_model(cfg)
    head = model.head
    ids = torch.randint(0, 70, (2, 11))
    targets = torch.randint(0, 70, (2, 11))
    targets[0, :4] = IGNORE
    out = {}
    for backend in ("torch", "triton"):
        model.zero_grad()
        loss, per_token, logits = ops.vocab_loss(model, lambda: model(ids), targets, IGNORE, backend=backend)
        assert (logits is None) == (backend == "triton")
        loss.backward()
        out[backend] = (loss.item(), per_token.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.head is head
    assert out["triton"][0] == pytest.approx(out["torch"][0], rel=1e-5)
    torch.testing.assert_close(out["triton"][1], out["torch"][1], rtol=1e-5, atol=1e-5)
    for name, grad in out["torch"][2].items():
        torch.testing.assert_close(out["triton"][2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_vocab_loss_keeps_the_logits_when_asked():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=30, n_layer=1, n_head=2, d_model=16, max_seq_len=8))
    ids = torch.randint(0, 30, (1, 8))
    _, _, logits = ops.vocab_loss(model, lambda: model(ids), ids, IGNORE, need_logits=True, backend="triton")
    assert logits.shape == (1, 8, 30)
