"""The mLSTM family: the three cell forms agree (values and gradients), causality, documents,
generation with carried state, learning, and the training loop end to end with resume."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_pretrain, full_and_resumed
from safetensors.torch import load_file

from tinylm.config import ModelConfig
from tinylm.models import build_model
from tinylm.models.mlstm import MLSTM
from tinylm.models.mlstm_cell import log_forget_gate, mlstm_cell, segments
from tinylm.train.checkpoint import checkpoint_dirs

# Tolerances: |a - b| <= tol * (1 + |b|) elementwise. The cell's output is a ratio of two sums
# that can nearly cancel, so it is compared relative to its own size (the model's logits are O(1)).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
LENGTHS = (1, 7, 64, 100)
CHUNKS = (1, 8, 16, 64)


def assert_near(a, b, tol):
    err = ((a - b).abs() / (1 + b.abs())).max().item()
    assert err <= tol, f"max relative error {err:.2e} > {tol:.0e}"


def cell_inputs(T, dtype, forget="sigmoid", B=2, H=2, D=8, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype) for _ in range(3))
    i_pre = torch.randn(B, H, T, generator=g, dtype=dtype)
    # sigmoid: biases as at init (long memory); exp: forget gates around 1, some above
    f_pre = torch.randn(B, H, T, generator=g, dtype=dtype) + (3.0 if forget == "sigmoid" else -0.2)
    out = [q, k, v, i_pre, f_pre]
    return [x.requires_grad_(requires_grad) for x in out]


def naive_cell(q, k, v, i_pre, f_pre, forget):
    """The paper's equations with no stabiliser at all (float64, short sequences only)."""
    B, H, T, D = q.shape
    C = torch.zeros(B, H, D, D, dtype=q.dtype)
    n = torch.zeros(B, H, D, dtype=q.dtype)
    f = torch.sigmoid(f_pre) if forget == "sigmoid" else torch.exp(f_pre)
    i = torch.exp(i_pre)
    hs = []
    for t in range(T):
        kt = k[:, :, t] / math.sqrt(D)
        C = f[:, :, t, None, None] * C + i[:, :, t, None, None] * v[:, :, t, :, None] * kt[:, :, None, :]  # v k^T
        n = f[:, :, t, None] * n + i[:, :, t, None] * kt
        num = (C @ q[:, :, t, :, None]).squeeze(-1)
        den = (n * q[:, :, t]).sum(-1).abs().clamp_min(1.0)
        hs.append(num / den[..., None])
    return torch.stack(hs, 2)


# ----------------------------------------------------------------------------------------------
# the cell


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_stabilised_forms_equal_the_unstabilised_equations(forget):
    x = cell_inputs(20, torch.float64, forget)
    ref = naive_cell(*x, forget)
    for form, kw in [("parallel", {}), ("recurrent", {}), ("chunkwise", {"chunk_size": 8})]:
        assert_near(mlstm_cell(*x, form=form, forget_gate=forget, **kw)[0], ref, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
@pytest.mark.parametrize("T", LENGTHS)
def test_cell_forms_agree(T, forget, dtype):
    x = cell_inputs(T, dtype, forget)
    # The exp forget gate lets the memory grow, so the normaliser's sum cancels more: in float32
    # every form is then ~1e-5 from the float64 truth, and two forms differ by up to ~3e-5.
    tol = 5e-5 if forget == "exp" and dtype == torch.float32 else TOL[dtype]
    h_par, _ = mlstm_cell(*x, form="parallel", forget_gate=forget)
    h_rec, s_rec = mlstm_cell(*x, form="recurrent", forget_gate=forget)
    assert_near(h_rec, h_par, tol)
    for L in CHUNKS:
        h_chk, s_chk = mlstm_cell(*x, form="chunkwise", forget_gate=forget, chunk_size=L)
        assert_near(h_chk, h_par, tol)
        for a, b in zip(s_chk, s_rec):  # same final (C~, n~, m): the forms share the stabiliser
            assert_near(a, b, tol)


def test_chunkwise_state_continues_a_sequence():
    x = cell_inputs(45, torch.float64)
    full, s_full = mlstm_cell(*x, form="chunkwise", chunk_size=8)
    first, state = mlstm_cell(*(t[:, :, :19] for t in x), form="chunkwise", chunk_size=8)
    second, s_two = mlstm_cell(*(t[:, :, 19:] for t in x), form="chunkwise", chunk_size=16, state=state)
    assert_near(torch.cat([first, second], 2), full, 1e-12)
    rec, _ = mlstm_cell(*(t[:, :, 19:] for t in x), form="recurrent", state=state)
    assert_near(rec, second, 1e-12)
    for a, b in zip(s_two, s_full):
        assert_near(a, b, 1e-12)


def test_cell_resets_at_document_starts():
    x = cell_inputs(30, torch.float64)
    doc_ids = torch.tensor([[5] * 11 + [2] * 9 + [7] * 10, [0] * 30])
    seg = segments(doc_ids)
    h_par, _ = mlstm_cell(*x, form="parallel", seg=seg)
    for form, kw in [("recurrent", {}), ("chunkwise", {"chunk_size": 8}), ("chunkwise", {"chunk_size": 64})]:
        assert_near(mlstm_cell(*x, form=form, seg=seg, **kw)[0], h_par, 1e-12)
    # row 0: each document computes what it computes alone; row 1 (one document) is unaffected
    for lo, hi in [(0, 11), (11, 20), (20, 30)]:
        alone, _ = mlstm_cell(*(t[:1, :, lo:hi] for t in x), form="parallel")
        assert_near(h_par[:1, :, lo:hi], alone, 1e-12)
    assert_near(h_par[1:], mlstm_cell(*(t[1:] for t in x), form="parallel")[0], 1e-12)


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_cell_gradients_agree_between_parallel_and_chunkwise(forget):
    grads = {}
    for form in ("parallel", "chunkwise", "recurrent"):
        x = cell_inputs(37, torch.float64, forget, requires_grad=True)
        h, _ = mlstm_cell(*x, form=form, forget_gate=forget, chunk_size=8)
        (h * torch.linspace(-1, 1, h.shape[-1], dtype=h.dtype)).sum().backward()
        grads[form] = [t.grad for t in x]
    for form in ("chunkwise", "recurrent"):
        for a, b in zip(grads[form], grads["parallel"]):
            assert_near(a, b, 1e-10)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_gradcheck(form):
    x = cell_inputs(5, torch.float64, B=1, H=1, D=3, seed=3, requires_grad=True)
    seg = torch.tensor([[0, 0, 0, 1, 1]])

    def f(q, k, v, i_pre, f_pre):
        a = mlstm_cell(q, k, v, i_pre, f_pre, form=form, chunk_size=2)[0]  # 3 chunks, the last padded
        b = mlstm_cell(q, k, v, i_pre, f_pre, form=form, chunk_size=2, seg=seg)[0]
        return a, b

    assert torch.autograd.gradcheck(f, tuple(x), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_long_sequence_stays_finite(forget):
    x = cell_inputs(8192, torch.float32, forget, B=1, H=2, D=8, requires_grad=True)
    h, (C, n, m) = mlstm_cell(*x, form="chunkwise", forget_gate=forget, chunk_size=64)
    assert torch.isfinite(h).all() and torch.isfinite(C).all() and torch.isfinite(n).all()
    h.square().mean().backward()
    assert all(torch.isfinite(t.grad).all() for t in x)


def test_long_sequence_through_the_model_stays_finite():
    model = build_model(ModelConfig(family="mlstm", vocab_size=61, n_layer=2, n_head=2, d_model=16,
                                    max_seq_len=64))  # (window attention would build a T x T mask)
    ids = torch.randint(0, 61, (1, 8192))
    logits = model(ids)  # chunkwise (the default form); longer than max_seq_len, which only bounds training
    assert logits.shape == (1, 8192, 61) and torch.isfinite(logits).all()
    logits.float().logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_forget_gate_kinds():
    f = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(log_forget_gate(f, "sigmoid"), torch.log(torch.sigmoid(f)))
    torch.testing.assert_close(log_forget_gate(f, "exp"), f)
    with pytest.raises(ValueError, match="forget gate"):
        log_forget_gate(f, "tanh")


# ----------------------------------------------------------------------------------------------
# the model


def tiny_mlstm(dtype=torch.float32, **kw) -> MLSTM:
    torch.manual_seed(0)
    base = dict(family="mlstm", vocab_size=61, n_layer=2, n_head=2, d_model=32, max_seq_len=64)
    model = build_model(ModelConfig(**{**base, **kw})).to(dtype)
    # random gates and norms: the init (zero gate weights) would make every form trivially alike
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gates" in name or "norm_weight" in name or "skip" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("swa", [0, 2], ids=["mlstm", "mlstm+swa"])
def test_model_forms_agree(swa, dtype):
    model = tiny_mlstm(dtype, n_layer=3 if swa else 2, mlstm_swa_every=swa, mlstm_swa_window=16).eval()
    ids = torch.randint(0, 61, (2, max(LENGTHS)), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for T in LENGTHS:
            ref = model(ids[:, :T], form="parallel")
            assert_near(model(ids[:, :T], form="recurrent"), ref, TOL[dtype])
            for L in CHUNKS:
                assert_near(model(ids[:, :T], form="chunkwise", chunk_size=L), ref, TOL[dtype])


def test_model_gradients_agree_between_parallel_and_chunkwise():
    model = tiny_mlstm(torch.float64, n_layer=3, mlstm_swa_every=3, mlstm_swa_window=8)
    ids = torch.randint(0, 61, (2, 40), generator=torch.Generator().manual_seed(2))
    grads = {}
    for form in ("parallel", "chunkwise"):
        model.zero_grad()
        F.cross_entropy(model(ids[:, :-1], form=form, chunk_size=16).flatten(0, 1), ids[:, 1:].flatten()).backward()
        grads[form] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, g in grads["parallel"].items():
        assert_near(grads["chunkwise"][name], g, 1e-10)


def test_model_causality():
    model = tiny_mlstm(n_layer=3, mlstm_swa_every=2, mlstm_swa_window=4).eval()
    ids = torch.randint(0, 61, (2, 40))
    changed = ids.clone()
    changed[:, 21:] = torch.randint(0, 61, (2, 19))
    for form in ("chunkwise", "parallel", "recurrent"):
        with torch.no_grad():
            a, b = model(ids, form=form, chunk_size=8), model(changed, form=form, chunk_size=8)
        torch.testing.assert_close(a[:, :21], b[:, :21], rtol=0, atol=1e-6)
        assert not torch.allclose(a[:, 21:], b[:, 21:])


def test_model_document_ids_reset_the_memory():
    """A packed row's second document gives the logits of that document run on its own."""
    model = tiny_mlstm(torch.float64, n_layer=3, mlstm_swa_every=2, mlstm_swa_window=6).eval()
    ids = torch.randint(0, 61, (1, 30))
    doc_ids = torch.tensor([[3] * 12 + [4] * 18])
    with torch.no_grad():
        alone = model(ids[:, 12:])
        for form in ("parallel", "chunkwise", "recurrent"):
            packed = model(ids, doc_ids=doc_ids, form=form, chunk_size=8)
            assert_near(packed[:, 12:], alone, 1e-10)
            assert_near(packed[:, :12], model(ids[:, :12]), 1e-10)


def test_generate_matches_the_full_forward_and_carries_state():
    model = tiny_mlstm(torch.float64, n_layer=3, mlstm_swa_every=2, mlstm_swa_window=4).eval()
    prompt = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(4))
    calls = []
    real_run = model._run

    def spy(input_ids, *args, **kwargs):
        calls.append(input_ids.shape[1])
        return real_run(input_ids, *args, **kwargs)

    model._run = spy
    out = model.generate(prompt, 12, temperature=0)
    del model._run
    assert calls == [5] + [1] * 11  # the prompt once, then one token per step: no re-reading
    with torch.no_grad():
        full = model(out)
    assert out.shape == (2, 17) and torch.equal(out[:, :5], prompt)
    assert torch.equal(out[:, 5:], full[:, 4:-1].argmax(-1))
    # the stepped logits themselves equal the full forward's
    with torch.no_grad():
        logits, state = model._run(out[:, :5], form="chunkwise", want_state=True)
        stepped = [logits[:, -1]]
        for t in range(5, 16):
            logits, state = model._run(out[:, t : t + 1], form="recurrent", state=state, want_state=True)
            stepped.append(logits[:, -1])
    assert_near(torch.stack(stepped, 1), full[:, 4:-1], 1e-10)


def test_generate_sampling_is_reproducible_and_stops_at_eos():
    model = tiny_mlstm().eval()
    prompt = torch.tensor([[2, 5, 7]])
    a = model.generate(prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 9) and torch.equal(a, b)
    first = model.generate(prompt, 1, temperature=0)[0, -1].item()
    assert model.generate(prompt, 10, temperature=0, eos_id=first).shape == (1, 4)


def test_api_groups_params_flops_and_validation():
    model = tiny_mlstm(n_layer=4, mlstm_swa_every=2)
    assert model.causal and model.head.weight is model.tok_emb.weight
    decay, no_decay = model.optimizer_groups(0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.tok_emb.weight) not in decayed and id(model.blocks[0].mlstm.up.weight) in decayed
    assert id(model.blocks[0].mlstm.skip) not in decayed
    n_all = sum(p.numel() for p in model.parameters())
    assert n_all == sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params()
    assert model.flops_per_token(64) > 6 * model.num_params()
    assert model.flops_per_token(128) == model.flops_per_token(64) + 2 * 2 * 12 * 64 * 16  # 2 attention layers x 2 heads grow
    loss = F.cross_entropy(model(torch.randint(0, 61, (4, 16))).flatten(0, 1), torch.randint(0, 61, (64,)))
    assert abs(loss.item() - math.log(61)) < 0.3
    for bad in (dict(mlstm_form="scan"), dict(mlstm_forget_gate="tanh"), dict(mlstm_swa_every=1),
                dict(mlstm_chunk_size=0), dict(n_head=3), dict(vocab_size=0)):
        with pytest.raises(ValueError):
            build_model(ModelConfig(**{**dict(family="mlstm", vocab_size=61, n_head=2, d_model=32), **bad}))


def test_bf16_autocast_runs():
    model = tiny_mlstm()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, 61, (2, 40)))
    assert torch.isfinite(logits.float()).all()


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="mlstm", vocab_size=32, n_layer=2, n_head=2, d_model=32,
                                    mlstm_chunk_size=16))
    batch = torch.randint(0, 32, (4, 33), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.optimizer_groups(0.0), lr=1e-2)
    for step in range(200):
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        if loss.item() < 0.1:
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.1, (step, loss.item())  # from ln 32 = 3.47


@pytest.mark.parametrize("option,blocks,total", [("mlstm_10m", 11.0e6, 17.3e6), ("mlstm_30m", 25.9e6, 34.3e6)])
def test_shipped_sizes(option, blocks, total):
    cfg = compose_pretrain(f"model={option}", "run_dir=/tmp/x").model
    cfg.vocab_size = 16384
    with torch.device("meta"):
        model = build_model(cfg)
    n = model.num_params()
    assert n == pytest.approx(total, rel=0.01) and n - model.tok_emb.weight.numel() == pytest.approx(blocks, rel=0.01)


# ----------------------------------------------------------------------------------------------
# the training loop


class Interrupt(Exception):
    pass


def test_training_loop_trains_mlstm_and_resumes_bit_exact(tmp_path, cache_dir, monkeypatch):
    overrides = ("model=mlstm_tiny", "model.mlstm_chunk_size=16", "train.steps=12", "train.ckpt_every=6",
                 "train.log_every=1", "train.eval_every=6", "model.dropout=0.1", "optim.warmup_steps=2")
    summary, _, rows, resumed_rows = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=6,
                                                      error=Interrupt)
    full, parts = tmp_path / "full", tmp_path / "parts"
    losses = [r["loss"] for r in rows if "loss" in r]
    dev = [r["dev_loss"] for r in rows if "dev_loss" in r]
    assert json.loads((checkpoint_dirs(full)[-1] / "state.json").read_text())["model_config"]["family"] == "mlstm"
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] and dev[-1] < dev[0]
    assert summary["steps"] == 12 and "## step 12" in (full / "samples.txt").read_text()
    assert rows == resumed_rows
    wa = load_file(checkpoint_dirs(full)[-1] / "model.safetensors")
    wb = load_file(checkpoint_dirs(parts)[-1] / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
