"""Objectives (tinylm/train/objectives.py, masking.py, distill.py): masking statistics, MNTP,
GPT-BERT hybrid, distillation, every family overfitting one batch, and BERT training end to end
with a bit-exact resume."""

import json
import math
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import full_and_resumed, smoke_config

from tinylm.config import ModelConfig, ObjectiveConfig
from tinylm.data.tokenizer import MASK_ID
from tinylm.errors import InputError
from tinylm.models import build_model
from tinylm.train.checkpoint import checkpoint_dirs, save_checkpoint
from tinylm.train.loop import pretrain, write_samples
from tinylm.train.metrics import read_metrics
from tinylm.train.distill import distillation_loss
from tinylm.train.masking import IGNORE, N_SPECIAL, Masker, mntp_targets
from tinylm.train.objectives import build_objective

V = 1000


def random_ids(B, T, seed=0, specials_every=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, V, (B, T), generator=g)
    if specials_every:
        ids[:, ::specials_every] = torch.randint(0, N_SPECIAL, ids[:, ::specials_every].shape, generator=g)
    return ids


def runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for v in row.tolist() + [False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


# --------------------------------------------------------------------------------------------------
# masking statistics


def test_token_masking_rate_and_80_10_10_split():
    cfg = ObjectiveConfig(name="mlm", mask_token_prob=0.8, random_token_prob=0.1)
    masker, gen = Masker(cfg, V), torch.Generator().manual_seed(0)
    ids = random_ids(64, 128, specials_every=9)
    maskable = ids >= N_SPECIAL
    chosen_n = maskable_n = 0
    as_mask = as_random = kept = 0
    for _ in range(20):
        chosen = masker.choose(ids, 0.15, gen)
        assert not (chosen & ~maskable).any()  # specials never chosen
        inputs = masker.corrupt(ids, chosen, gen)
        assert torch.equal(inputs[~chosen], ids[~chosen])
        assert (inputs[chosen] >= N_SPECIAL).sum() + (inputs[chosen] == MASK_ID).sum() == chosen.sum()
        chosen_n += int(chosen.sum())
        maskable_n += int(maskable.sum())
        as_mask += int((inputs[chosen] == MASK_ID).sum())
        kept += int((inputs[chosen] == ids[chosen]).sum())
        as_random += int(((inputs[chosen] != ids[chosen]) & (inputs[chosen] != MASK_ID)).sum())
    assert chosen_n / maskable_n == pytest.approx(0.15, abs=0.002)
    assert as_mask / chosen_n == pytest.approx(0.8, abs=0.015)
    # a random replacement equals the original token with probability 1 / (V - N_SPECIAL)
    assert as_random / chosen_n == pytest.approx(0.1, abs=0.01)
    assert kept / chosen_n == pytest.approx(0.1, abs=0.01)


def test_span_masking_rate_and_lengths():
    cfg = ObjectiveConfig(name="mlm", masking="span", span_mean=3.0, span_max=6)
    masker, gen = Masker(cfg, V), torch.Generator().manual_seed(1)
    ids = random_ids(16, 512)
    lengths, chosen_n = [], 0
    for _ in range(10):
        chosen = masker.choose(ids, 0.15, gen)
        chosen_n += int(chosen.sum())
        for row in chosen:
            lengths += runs(row)[:-1]  # the last span of a row may be cut to fit the budget
    assert chosen_n / ids.numel() / 10 == pytest.approx(0.15, abs=0.003)
    # geometric(p = 1/3) clipped at 6: E[L] = sum_{l=1..6} P(L >= l) = sum_{l=0..5} (2/3)^l
    expected = sum((2 / 3) ** k for k in range(6))
    assert max(lengths) == 6 and min(lengths) == 1
    assert sum(lengths) / len(lengths) == pytest.approx(expected, rel=0.05)
    assert lengths.count(1) / len(lengths) == pytest.approx(1 / 3, abs=0.03)


def test_span_masking_skips_specials_and_hits_the_rate_exactly_per_row():
    cfg = ObjectiveConfig(name="mlm", masking="span", span_mean=4.0, span_max=10)
    masker, gen = Masker(cfg, V), torch.Generator().manual_seed(2)
    ids = random_ids(8, 100, specials_every=7)
    chosen = masker.choose(ids, 0.5, gen)
    assert not (chosen & (ids < N_SPECIAL)).any()
    m = (ids >= N_SPECIAL).sum(1)
    assert ((chosen.sum(1) - 0.5 * m).abs() <= 1).all()  # stochastic rounding of rate * m


def test_adaptive_masking_prefers_hard_ids_and_keeps_the_rate():
    cfg = ObjectiveConfig(name="mlm", adaptive=True)
    model = build_model(ModelConfig(family="bert", vocab_size=V, n_layer=1, n_head=1, d_model=8, d_ff=8, max_seq_len=64))
    obj = build_objective(cfg, model, V, total_steps=10, seed=0, device=torch.device("cpu"))
    assert torch.allclose(obj.loss_ema, torch.tensor(math.log(V)))
    obj.loss_ema[:] = 1.0
    obj.loss_ema[500:] = 4.0  # ids >= 500 are predicted 4x worse
    ids = random_ids(64, 64)
    hard = ids >= 500
    n_hard = n_easy = total = 0
    for _ in range(10):
        _, _, chosen = obj._mask(ids, 0.15, obj.generator, shifted=False, adaptive=True)
        n_hard += int((chosen & hard).sum())
        n_easy += int((chosen & ~hard).sum())
        total += int(chosen.sum())
    assert total / (10 * ids.numel()) == pytest.approx(0.15, abs=0.003)  # mean rate unchanged
    rate_hard, rate_easy = n_hard / (10 * int(hard.sum())), n_easy / (10 * int((~hard).sum()))
    assert 2.5 < rate_hard / rate_easy < 4.5  # ~4x: sampling without replacement flattens it a little
    # the EMA follows the losses of the masked ids
    obj._update_ema(torch.tensor([10, 10, 20]), torch.tensor([2.0, 4.0, 0.0]))
    assert obj.loss_ema[10].item() == pytest.approx(0.99 * 1.0 + 0.01 * 3.0)
    assert obj.loss_ema[20].item() == pytest.approx(0.99 * 1.0)
    assert obj.loss_ema[30].item() == 1.0


def test_mask_rate_schedule_is_linear():
    model = build_model(ModelConfig(family="bert", vocab_size=V, n_layer=1, n_head=1, d_model=8, d_ff=8))
    obj = build_objective(ObjectiveConfig(name="mlm", mask_rate_start=0.3, mask_rate_end=0.15), model, V, 101, 0,
                          torch.device("cpu"))
    assert obj.mask_rate(0) == pytest.approx(0.3)
    assert obj.mask_rate(50) == pytest.approx(0.225)
    assert obj.mask_rate(100) == pytest.approx(0.15)


# --------------------------------------------------------------------------------------------------
# MNTP, hybrid, distillation


def test_mntp_targets_by_hand():
    ids = torch.tensor([[10, 11, 12, 13, 14]])
    chosen = torch.tensor([[False, True, False, True, True]])
    assert mntp_targets(ids, chosen).tolist() == [[11, IGNORE, 13, 14, IGNORE]]


class Recorder(torch.nn.Module):
    """Wraps a model and records how it is called."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, input_ids, causal=False, **kw):
        self.calls.append((input_ids.shape[0], causal, input_ids.clone()))
        return self.model(input_ids, causal=causal, **kw)


def tiny_bert(vocab=V):
    torch.manual_seed(0)
    return build_model(ModelConfig(family="bert", vocab_size=vocab, n_layer=1, n_head=2, d_model=16, d_ff=16, max_seq_len=32))


def test_hybrid_rows_computes_both_losses_with_the_configured_share():
    model = tiny_bert()
    obj = build_objective(ObjectiveConfig(name="hybrid", causal_share=0.25, mask_rate_start=0.3, mask_rate_end=0.3),
                          model, V, 10, 0, torch.device("cpu"))
    rec = Recorder(model)
    ids = random_ids(8, 17)
    gen_copy = torch.Generator().set_state(obj.generator.get_state())
    loss, stats = obj.train_loss(rec, ids[:, :-1], ids[:, 1:], step=0)
    assert [(n, c) for n, c, _ in rec.calls] == [(2, True), (6, False)]  # 2 of 8 rows causal, 6 masked
    assert stats["causal_share"] == 0.25 and {"clm_loss", "mntp_loss", "mask_rate"} <= set(stats)
    assert loss.item() == pytest.approx(0.25 * stats["clm_loss"] + 0.75 * stats["mntp_loss"], rel=1e-6)
    # the causal loss by hand
    with torch.no_grad():
        logits = model(ids[:2, :-1], causal=True)
        assert stats["clm_loss"] == pytest.approx(F.cross_entropy(logits.reshape(-1, V), ids[:2, 1:].reshape(-1)).item(), rel=1e-5)
        # the masked rows by hand, with the same draws: token k predicted at k - 1
        inputs, _, chosen = obj._mask(ids[2:, :-1], 0.3, gen_copy, shifted=True, adaptive=False)
        assert torch.equal(rec.calls[1][2], inputs) and not chosen[:, 0].any()
        logits = model(inputs)
        logp = logits.log_softmax(-1)
        b, k = chosen.nonzero(as_tuple=True)
        expected = -logp[b, k - 1, ids[2:, :-1][b, k]].mean()
    assert stats["mntp_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert inputs[chosen].eq(MASK_ID).float().mean() > 0.5


def test_hybrid_steps_alternate_with_the_configured_share():
    model = tiny_bert()
    obj = build_objective(ObjectiveConfig(name="hybrid", causal_share=0.25, hybrid_mode="steps"), model, V, 8, 0,
                          torch.device("cpu"))
    assert [obj.causal_step(s) for s in range(8)] == [False, False, False, True] * 2
    rec = Recorder(model)
    ids = random_ids(4, 9)
    for step in range(4):
        _, stats = obj.train_loss(rec, ids[:, :-1], ids[:, 1:], step)
        assert ("clm_loss" in stats) == (step == 3) and ("mntp_loss" in stats) == (step != 3)
    assert [c for _, c, _ in rec.calls] == [False, False, False, True]


def test_distillation_loss_is_the_temperature_scaled_kl():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t1, t2 = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[2.0, -1.0, 0.0]])
    T = 2.0

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    p1, p2, q = softmax([0.5, 0.5, 0.0]), softmax([2.0, -1.0, 0.0]), softmax([1.0, 0.0, -1.0])
    p = [(a + b) / 2 for a, b in zip(p1, p2)]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert distillation_loss(s, [t1, t2], T).item() == pytest.approx(T * T * kl, rel=1e-6)
    assert distillation_loss(s, [s], T).item() == pytest.approx(0.0, abs=1e-6)


def test_samples_of_a_masked_model_hold_each_prompts_pll(tmp_path):
    """A masked model cannot generate: samples.txt holds the prompt's pseudo-log-likelihood, each
    token after <bos> masked in turn and read at its own position, summed (written out here)."""
    model = tiny_bert(vocab=64).eval()
    prompt = [9, 10, 11]
    tok = SimpleNamespace(bos_id=2, eos_id=3, encode=lambda texts: [prompt])
    write_samples(model, SimpleNamespace(tokenizer=tok), ["a prompt"], 5, 0, 7, tmp_path / "samples.txt", torch.device("cpu"),
                  objective=SimpleNamespace(generates=False))
    ids = [2, *prompt]
    expected = 0.0
    with torch.no_grad():
        for k in range(1, 4):
            x = torch.tensor([ids])
            x[0, k] = MASK_ID
            expected += model(x)[0, k].log_softmax(-1)[ids[k]].item()
    text = (tmp_path / "samples.txt").read_text()
    found = re.fullmatch(r"## step 7\na prompt >>> PLL (-?[0-9.]+) nats over 3 tokens \(.*\)\n\n", text)
    assert found and float(found[1]) == pytest.approx(expected, abs=0.006)


def test_objective_config_mistakes_are_input_errors():
    gpt = build_model(ModelConfig(vocab_size=V, n_layer=1, n_head=1, d_model=8))
    bert = tiny_bert()
    cpu = torch.device("cpu")
    with pytest.raises(InputError, match="bidirectional"):
        build_objective(ObjectiveConfig(name="mlm"), gpt, V, 10, 0, cpu)
    with pytest.raises(InputError, match="bert"):
        build_objective(ObjectiveConfig(name="hybrid"), gpt, V, 10, 0, cpu)
    with pytest.raises(InputError, match="objective.name"):
        build_objective(ObjectiveConfig(name="mlmm"), bert, V, 10, 0, cpu)
    with pytest.raises(InputError, match="teachers"):
        build_objective(ObjectiveConfig(name="distill"), gpt, V, 10, 0, cpu)
    with pytest.raises(InputError, match="adaptive"):
        build_objective(ObjectiveConfig(name="mlm", masking="span", adaptive=True), bert, V, 10, 0, cpu)
    with pytest.raises(InputError, match="mask_rate_end"):
        build_objective(ObjectiveConfig(name="mlm", mask_rate_end=0.0), bert, V, 10, 0, cpu)


# --------------------------------------------------------------------------------------------------
# every family overfits one batch


def families():
    out = [("gpt", "clm"), ("bert", "mlm"), ("bert", "hybrid")]
    try:
        import tinylm.models.mlstm  # noqa: F401
    except ImportError:
        pass
    else:
        out.append(("mlstm", "clm"))
    return out


@pytest.mark.parametrize("family,objective", families(), ids=[f"{f}-{o}" for f, o in families()])
def test_every_family_overfits_one_batch(family, objective, one_thread):
    """One fixed batch: 4 rows, each 4 distinct tokens (16 distinct in all) repeated to 17 tokens.
    A model that ignores context cannot go below ln 16 = 2.77 nats, one that only knows which
    tokens are in the row not below ~ln 4 = 1.39. Every family must memorise it to < 0.05 nats.

    Causal objectives (and GPT-BERT, whose masked half is predicted from the token before it) see
    the same inputs every step. Plain MLM is run the standard overfit-one-batch way: the masking is
    FIXED (the objective's generator is reset to the same state before every step, so the same
    positions are chosen and corrupted identically), making the batch one fixed (input, target)
    pair to memorise. With fresh random masks every step, the default BERT (relative positions only)
    sits on the "tokens of this row" plateau (~1.45 nats after 200 steps, like a plain-PyTorch
    encoder with no positions at all) and finds the positional copy only after ~1000 steps, if at
    all: that is the task's difficulty, not a bug, and would make this test either slow or unable to
    tell a broken model from a working one. With the fixed mask, a BERT that did not use positions
    (an encoder without positions: ~0.8-1.0 nats) fails the threshold."""
    vocab = 64
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, vocab_size=vocab, n_layer=2, n_head=2, d_model=32, d_ff=64,
                                    max_seq_len=32, mlstm_chunk_size=8))
    obj = build_objective(ObjectiveConfig(name=objective, mask_rate_start=0.3, mask_rate_end=0.3), model, vocab, 200, 0,
                          torch.device("cpu"))
    units = (N_SPECIAL + torch.randperm(vocab - N_SPECIAL, generator=torch.Generator().manual_seed(0))[:16]).view(4, 4)
    rows = units.repeat(1, 5)[:, :17]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    mask_state = obj.generator.get_state()
    losses = []
    for step in range(200):
        if objective == "mlm":
            obj.generator.set_state(mask_state)  # the same masked positions and corruption every step
        loss, _ = obj.train_loss(model, rows[:, :-1], rows[:, 1:], step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.05:
            break
    assert losses[0] > 3.5, losses[0]
    assert losses[-1] < 0.05, (losses[-1], step)  # memorised: far below ln 4 = 1.39 and ln 16 = 2.77


# --------------------------------------------------------------------------------------------------
# end to end


BERT_SMOKE = ("model=bert_tiny", "model.d_ff=128", "objective=mlm", "objective.adaptive=true")


def test_bert_mlm_pretrains_and_resumes_bit_exact(tmp_path, cache_dir, monkeypatch, one_thread):
    overrides = (*BERT_SMOKE, "train.steps=8", "train.ckpt_every=4", "train.log_every=1", "train.eval_every=4",
                 "model.dropout=0.1")
    summary, _, a, b = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=4)
    full = tmp_path / "full"
    assert summary["steps"] == 8
    assert a == b and "mask_rate" in a[0] and "dev_loss" in a[-1]
    assert a[0]["mask_rate"] > a[-1]["mask_rate"]  # the schedule: 0.3 -> 0.15
    state = json.loads((checkpoint_dirs(full)[-1] / "state.json").read_text())
    assert {"generator", "loss_ema"} <= set(state["objective"])
    assert "PLL" in (full / "samples.txt").read_text()
    for name in ("config.yaml", "summary.json", "loss_curve.png", "tokenizer.model"):
        assert (full / name).exists()


def test_distillation_from_a_teacher_run(tmp_path, cache_dir, one_thread):
    teacher = tmp_path / "teacher"
    pretrain(smoke_config(teacher, cache_dir, "train.steps=4"))
    student = tmp_path / "student"
    pretrain(smoke_config(student, cache_dir, "train.steps=4", "train.log_every=1", "objective=distill",
                          f"objective.teachers=[{teacher}]", "model.n_layer=1"))
    rows = [r for r in read_metrics(student) if "loss" in r]
    for r in rows:
        assert r["loss"] == pytest.approx(0.5 * r["hard_loss"] + 0.5 * r["distill_loss"], rel=1e-5)

    # a teacher with another vocabulary is refused with a clear message
    other = tmp_path / "other"
    save_checkpoint(other, 1, build_model(ModelConfig(vocab_size=97, n_layer=1, n_head=1, d_model=8)),
                    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]),
                    {"model_config": ModelConfig(vocab_size=97, n_layer=1, n_head=1, d_model=8).__dict__}, keep=1)
    shutil.copy(teacher / "tokenizer.model", other / "tokenizer.model")
    with pytest.raises(InputError, match="vocabulary of 97 tokens"):
        pretrain(smoke_config(tmp_path / "student2", cache_dir, "objective=distill", f"objective.teachers=[{other}]"))
    assert not (tmp_path / "student2").exists()


def test_hybrid_pretrains_and_generates(tmp_path, cache_dir, one_thread):
    run_dir = tmp_path / "hybrid"
    pretrain(smoke_config(run_dir, cache_dir, "model=bert_tiny", "model.d_ff=128", "objective=hybrid", "train.steps=4",
                          "train.log_every=1", "train.eval_every=4", "train.sample_tokens=4"))
    rows = read_metrics(run_dir)
    assert all({"clm_loss", "mntp_loss", "mask_rate"} <= set(r) for r in rows if "loss" in r)
    assert "dev_mntp_loss" in rows[-1] and "dev_loss" in rows[-1]
    samples = (run_dir / "samples.txt").read_text()
    assert "## step 4" in samples and "PLL" not in samples  # GPT-BERT generates causally


def test_mlm_on_a_causal_model_is_refused_before_writing(tmp_path, cache_dir):
    with pytest.raises(InputError, match="bidirectional"):
        pretrain(smoke_config(tmp_path / "run", cache_dir, "objective=mlm"))
    assert not (tmp_path / "run").exists()
