"""The GPT through the Triton kernels (interpreted on CPU) against the PyTorch path."""

import sys
from pathlib import Path

import pytest
import torch

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers import smoke_config  # noqa: E402


@pytest.fixture
def backend_restored():
    yield
    ops.set_default_backend("auto")


def test_textbook_block_equals_fused_residual_form():
    """The fused-residual Block computes exactly x + attn(ln(x)), then + mlp(ln(.))."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, n_layer=3, n_head=2, d_model=32, max_seq_len=16)).double()
    ids = torch.randint(0, 50, (2, 16))
    x = model.tok_emb(ids) + model.pos_emb(torch.arange(16))
    for block in model.blocks:
        x = x + block.attn(block.ln_attn(x))
        x = x + block.mlp(block.ln_mlp(x))
    expected = model.head(model.ln_out(x))
    torch.testing.assert_close(model(ids), expected, rtol=1e-12, atol=1e-12)


def test_gpt_logits_and_grads_match_torch_backend(backend_restored):
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=64, n_layer=2, n_head=2, d_model=64, max_seq_len=40))
    ids = torch.randint(0, 64, (2, 37))
    out = {}
    for backend in ("torch", "triton"):
        ops.set_default_backend(backend)
        model.zero_grad()
        logits = model(ids)
        torch.nn.functional.cross_entropy(logits.view(-1, 64), ids.view(-1)).backward()
        out[backend] = (logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-4, atol=1e-5)
    for name, grad in out["torch"][1].items():
        torch.testing.assert_close(out["triton"][1][name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_fifty_training_steps_give_the_same_losses(tmp_path, cache_dir, backend_restored):
    """kernels=triton (interpreted) and kernels=torch: the same 50 losses within 1e-3 relative
    (fp32 kernels; the differences are summation order, amplified a little by training)."""
    from tinylm.train.loop import pretrain
    from tinylm.train.metrics import read_metrics

    common = ("train.steps=50", "model.n_layer=1", "train.batch_size=2", "train.seq_len=16", "train.log_every=1", "train.eval_every=50", "train.ckpt_every=50",
              "train.eval_batches=1", "train.sample_tokens=2")
    losses = {}
    for backend in ("torch", "triton"):
        pretrain(smoke_config(tmp_path / backend, cache_dir, *common, f"kernels={backend}"))
        losses[backend] = [r["loss"] for r in read_metrics(tmp_path / backend) if "loss" in r]
    assert len(losses["torch"]) == 50
    assert losses["triton"] == pytest.approx(losses["torch"], rel=1e-3)
    assert losses["torch"][-1] < losses["torch"][0] - 0.5  # it did train
