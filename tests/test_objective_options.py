"""Objective options (issue 12): multi-token prediction (tinylm/train/mtp.py), loss-based row
reweighting (reweight.py) and latent bootstrapping (bootstrap.py): their mathematics against hand
computations, training on every objective they apply to, bit-exact resumes, and HF exports that
hold only the model (no extra heads, no EMA teacher) with logits parity."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import full_and_resumed, smoke_config
from safetensors import safe_open

from tinylm.config import ModelConfig, ObjectiveConfig
from tinylm.errors import InputError
from tinylm.models import build_model
from tinylm.train import bootstrap, mtp
from tinylm.train.checkpoint import checkpoint_dirs
from tinylm.train.loop import pretrain
from tinylm.train.masking import IGNORE, N_SPECIAL
from tinylm.train.objectives import CLASSES, build_objective
from tinylm.train.positions import default_scorer, run_objective
from tinylm.train.reweight import reweighted, row_weights

V = 64
CPU = torch.device("cpu")


def tiny(family="gpt", **kw):
    cfg = dict(family=family, vocab_size=V, n_layer=2, n_head=2, d_model=16, d_ff=32, max_seq_len=32)
    return build_model(ModelConfig(**{**cfg, **kw}))


def batch(B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(N_SPECIAL, V, (B, T + 1), generator=g)
    return rows[:, :-1], rows[:, 1:]


# --------------------------------------------------------------------------------------------------
# multi-token prediction


def test_mtp_loss_and_gradients_equal_the_hand_computed_mean_of_two_heads():
    torch.manual_seed(0)
    model = tiny().double()
    w = 0.5
    obj = build_objective(ObjectiveConfig(name="clm", mtp_heads=2, mtp_weight=w), model, V, 10, 0, CPU)
    obj.module.double()
    with torch.no_grad():  # a non-trivial extra head (its output projection starts at zero)
        obj.module.heads[0].proj.weight.normal_(std=0.3)
    x, y = batch()
    loss, stats = obj.train_loss(model, x, y, step=0)
    loss.backward()
    got = {n: p.grad.clone() for n, p in [*model.named_parameters(), *obj.module.named_parameters()]}
    params = [*model.parameters(), *obj.module.parameters()]
    for p in params:
        p.grad = None

    # by hand: CE_1 over every position, CE_2 (token t+2 at t) over the first T-1, (CE_1 + w CE_2) / 2
    with mtp.head_as_identity(model):
        h = model(x)
    ce1 = F.cross_entropy(model.head(h).reshape(-1, V), y.reshape(-1))
    h2 = h + obj.module.heads[0].proj(F.gelu(obj.module.heads[0].fc(obj.module.heads[0].norm(h))))
    ce2 = F.cross_entropy(model.head(h2)[:, :-1].reshape(-1, V), y[:, 1:].reshape(-1))
    want = (ce1 + w * ce2) / 2
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert stats["mtp_loss_2"] == pytest.approx(ce2.item(), rel=1e-12)
    for n, p in [*model.named_parameters(), *obj.module.named_parameters()]:
        torch.testing.assert_close(got[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)


def _extra_head_grads(dtype, loss_scale, outer_scale, weight):
    """d(extra loss)/d(hidden) and /d(head's proj) through tinylm.train.mtp.extra_heads_loss in
    `dtype`, the outer backward run at `outer_scale` as an fp16 GradScaler would, then unscaled."""
    torch.manual_seed(0)
    heads, head = mtp.MTPHeads(2, 16), torch.nn.Linear(16, V)
    with torch.no_grad():
        heads.heads[0].proj.weight.normal_(std=0.3)
    heads, head = heads.to(dtype), head.to(dtype)
    hidden = torch.randn(2, 8, 16, dtype=torch.float64).to(dtype).requires_grad_(True)
    targets = batch(B=2, T=8)[1]
    extra = mtp.extra_heads_loss(hidden, head, heads, targets, IGNORE, weight, None, {}, loss_scale=loss_scale)
    (extra * outer_scale).backward()
    proj = heads.heads[0].proj.weight
    return hidden.grad.double() / outer_scale, proj.grad.double() / outer_scale


def test_mtp_inner_backward_runs_at_the_fp16_loss_scale():
    # a weight this small gives the extra head gradients (~1e-9) below fp16's smallest subnormal
    # (6e-8): they vanish unless the inner backward is scaled as the loop's outer one is
    weight, scale = 1e-6, 2.0 ** 16
    want = _extra_head_grads(torch.float64, 1.0, 1.0, weight)

    def rel_err(got):
        return max(float((g - w).norm() / w.norm()) for g, w in zip(got, want))

    assert rel_err(_extra_head_grads(torch.float16, scale, scale, weight)) < 0.02
    assert rel_err(_extra_head_grads(torch.float16, 1.0, scale, weight)) > 0.5  # unscaled: underflow


def test_mtp_targets_shift_by_k_and_stay_inside_documents():
    targets = torch.tensor([[11, 12, 13, 14, 15]])  # token t+1 at position t
    assert mtp.shifted_targets(targets, 2, IGNORE).tolist() == [[12, 13, 14, 15, IGNORE]]
    assert mtp.shifted_targets(targets, 3, IGNORE).tolist() == [[13, 14, 15, IGNORE, IGNORE]]
    docs = torch.tensor([[0, 0, 0, 1, 1]])
    # head 2 at t reads targets[t + 1], the token after position t + 1: kept when t + 1 is in t's document
    assert mtp.shifted_targets(targets, 2, IGNORE, docs).tolist() == [[12, 13, IGNORE, 15, IGNORE]]


@pytest.mark.parametrize("name,family", [("clm", "gpt"), ("clm", "mlstm"), ("hybrid", "bert")])
def test_mtp_trains_every_causal_family(name, family):
    torch.manual_seed(0)
    model = tiny(family)
    obj = build_objective(ObjectiveConfig(name=name, mtp_heads=3), model, V, 10, 0, CPU)
    opt = torch.optim.AdamW([*model.parameters(), *obj.trainable_parameters()], lr=3e-3)
    x, y = batch(seed=1)
    losses = []
    for step in range(8):
        loss, stats = obj.train_loss(model, x, y, step)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.05
    assert {"mtp_loss_2", "mtp_loss_3"} <= {k.removeprefix("clm_") for k in stats}
    assert all(p.grad is None for p in obj.trainable_parameters())  # zeroed by the optimizer like the model's


def test_the_extra_heads_train_in_the_optimizer_with_muon_for_their_matrices():
    from tinylm.config import OptimConfig
    from tinylm.train.optim import build_optimizer

    model = tiny()
    obj = build_objective(ObjectiveConfig(name="clm", mtp_heads=3), model, V, 10, 0, CPU)
    opt = build_optimizer(model, OptimConfig(name="muon"), extra=obj.module)
    muon = {id(p) for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    adamw = {id(p) for g in opt.param_groups if not g["use_muon"] for p in g["params"]}
    for head in obj.module.heads:
        assert {id(head.fc.weight), id(head.proj.weight)} <= muon
        assert {id(head.norm.weight), id(head.norm.bias)} <= adamw
    # the model's parameters come first, in their usual order: a run without extra heads is unchanged
    plain = build_optimizer(model, OptimConfig(name="muon"))
    for g, h in zip(plain.param_groups, opt.param_groups):
        assert [id(p) for p in g["params"]] == [id(p) for p in h["params"]][: len(g["params"])]


@pytest.mark.parametrize("overrides,message", [
    (dict(name="mlm", mtp_heads=2), "objective.mtp_heads=2"),
    (dict(name="clm", mtp_heads=0), "objective.mtp_heads=0"),
    (dict(name="clm", reweight="focal"), "objective.reweight='focal'"),
    (dict(name="clm", reweight="softmax", reweight_temperature=0.0), "objective.reweight_temperature"),
    (dict(name="clm", reweight="softmax", reweight_clip=0.5), "objective.reweight_clip"),
    (dict(name="bootstrap", bootstrap_loss="l3"), "objective.bootstrap_loss"),
    (dict(name="bootstrap", ema_decay=1.5), "objective.ema_decay=1.5"),
    (dict(name="bootstrap", bootstrap_layers=[5]), "objective.bootstrap_layers=[5]"),
])
def test_bad_option_values_are_refused_in_one_line(overrides, message):
    model = tiny("gpt" if overrides["name"] == "clm" else "bert")
    with pytest.raises(InputError) as e:
        build_objective(ObjectiveConfig(**overrides), model, V, 10, 0, CPU)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bootstrap_on_a_causal_model_is_refused():
    with pytest.raises(InputError, match="objective=bootstrap needs a bidirectional model"):
        build_objective(ObjectiveConfig(name="bootstrap"), tiny("gpt"), V, 10, 0, CPU)


# --------------------------------------------------------------------------------------------------
# reweighting


def test_softmax_and_rank_weights_of_three_rows_by_hand():
    loss, valid = torch.tensor([1.0, 2.0, 4.0]), torch.ones(3, dtype=torch.bool)
    e = [math.exp(v) for v in (1.0, 2.0, 4.0)]
    want = [3 * v / sum(e) for v in e]  # softmax x rows: mean 1
    assert row_weights(loss, valid, "softmax", 1.0, 100.0).tolist() == pytest.approx(want, rel=1e-6)
    # temperature 2: exp(L / 2)
    e2 = [math.exp(v / 2) for v in (1.0, 2.0, 4.0)]
    assert row_weights(loss, valid, "softmax", 2.0, 100.0).tolist() == pytest.approx([3 * v / sum(e2) for v in e2], rel=1e-6)
    # rank: quantiles 0, 1/2, 1 (the values do not matter, only their order)
    q = [math.exp(v) for v in (0.0, 0.5, 1.0)]
    assert row_weights(torch.tensor([4.0, 0.1, 9.0]), valid, "rank", 1.0, 100.0).tolist() == pytest.approx(
        [3 * q[1] / sum(q), 3 * q[0] / sum(q), 3 * q[2] / sum(q)], rel=1e-6)
    # clip 1.5: [0.137, 0.372, 2.491] -> [0.137, 0.372, 1.5], then scaled to mean 1
    clipped = [min(v, 1.5) for v in want]
    assert row_weights(loss, valid, "softmax", 1.0, 1.5).tolist() == pytest.approx([3 * v / sum(clipped) for v in clipped], rel=1e-6)
    # a row without scored tokens: weight 0, the others' mean 1
    w = row_weights(loss, torch.tensor([True, False, True]), "softmax", 1.0, 100.0).tolist()
    assert w == pytest.approx([2 * e[0] / (e[0] + e[2]), 0.0, 2 * e[2] / (e[0] + e[2])], rel=1e-6)


def test_reweighted_loss_weights_each_rows_tokens():
    per_token = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [4.0, 0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[5, 5, IGNORE], [5, 5, 5], [5, IGNORE, IGNORE]])
    stats = {}
    loss = reweighted(per_token, targets, IGNORE, "softmax", 1.0, 100.0, stats)
    e = [math.exp(v) for v in (1.0, 2.0, 4.0)]  # the rows' mean losses
    w = [3 * v / sum(e) for v in e]
    assert loss.item() == pytest.approx((w[0] * 2 + w[1] * 6 + w[2] * 4) / 6, rel=1e-6)
    assert stats["reweight_max_min"] == pytest.approx(e[2] / e[0], rel=1e-5)
    loss.backward()  # the weights are constants: d loss / d l_rt = w_r / N on scored tokens
    assert per_token.grad[1, 0].item() == pytest.approx(w[1] / 6, rel=1e-6) and per_token.grad[0, 2].item() == 0.0


@pytest.mark.parametrize("name", ["clm", "mlm", "hybrid", "distill", "bootstrap"])
def test_reweighting_trains_every_objective(name):
    torch.manual_seed(0)
    family = "gpt" if name in ("clm", "distill") else "bert"
    model = tiny(family)
    cfg = ObjectiveConfig(name=name, reweight="rank", reweight_temperature=0.5, mask_rate_start=0.3, mask_rate_end=0.3)
    teachers = [tiny("gpt").eval()] if name == "distill" else None
    obj = (CLASSES[name](cfg, model, V, 10, 0, CPU, teachers) if name == "distill"
           else build_objective(cfg, model, V, 10, 0, CPU))
    opt = torch.optim.AdamW([*model.parameters(), *obj.trainable_parameters()], lr=3e-3)
    x, y = batch(B=6, seed=2)
    losses = []
    for step in range(8):
        obj.generator.manual_seed(0)  # the same masks every step: the loss of one batch must fall
        loss, stats = obj.train_loss(model, x, y, step)
        loss.backward()
        opt.step()
        opt.zero_grad()
        obj.after_step(model, step + 1)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    spreads = [v for k, v in stats.items() if k.endswith("reweight_max_min")]
    assert spreads and all(v > 1.0 for v in spreads)


# --------------------------------------------------------------------------------------------------
# bootstrap


def test_ema_update_and_decay_schedule_by_hand():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    bootstrap.ema_update(teacher, student, 0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t.double(), 0.9 * t0.double() + 0.1 * s.detach().double(), rtol=0, atol=1e-7)
    assert bootstrap.ema_decay_at(0, 100, 0.996, 1.0) == 0.996
    assert bootstrap.ema_decay_at(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert bootstrap.ema_decay_at(100, 100, 0.996, 1.0) == pytest.approx(1.0)


def test_bootstrap_target_and_loss_on_a_tiny_case():
    h1 = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    h2 = torch.tensor([[0.0, 0.0, 4.0, 0.0]])

    def ln(v):  # by hand: (v - mean) / sqrt(var + eps), population variance
        m = sum(v) / len(v)
        var = sum((a - m) ** 2 for a in v) / len(v)
        return [(a - m) / math.sqrt(var + 1e-5) for a in v]

    one = ln([1.0, 2.0, 3.0, 6.0])
    assert bootstrap.bootstrap_target([h1]).tolist()[0] == pytest.approx(one, rel=1e-5)
    mean = [(a + b) / 2 for a, b in zip(one, ln([0.0, 0.0, 4.0, 0.0]))]
    assert bootstrap.bootstrap_target([h1, h2]).tolist()[0] == pytest.approx(ln(mean), rel=1e-5)
    pred, target = torch.tensor([[0.5, -2.0]]), torch.tensor([[0.0, 0.0]])
    # smooth-L1 (beta 1): 0.5 d^2 below 1, |d| - 0.5 above; mean over elements
    assert bootstrap.latent_loss(pred, target, "smooth_l1").item() == pytest.approx((0.5 * 0.25 + 1.5) / 2)
    assert bootstrap.latent_loss(pred, target, "mse").item() == pytest.approx((0.25 + 4.0) / 2)


@pytest.mark.parametrize("elc", [False, True])
def test_bootstrap_reads_the_hidden_state_the_head_reads(elc):
    """The last layer's state (LTG: the residual stream; ELC: o_L) is what the MLM head reads."""
    model = tiny("bert", bert_elc=elc).eval()
    seen = []
    hook = model.head_norm_in.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x, _ = batch()
    with bootstrap.layer_states(model, [-1, 0]) as states:
        model(x)
    hook.remove()
    torch.testing.assert_close(states[0], seen[0], rtol=0, atol=0)
    assert states[1].shape == seen[0].shape and not torch.equal(states[1], states[0])


def test_bootstrap_loss_is_latent_plus_weighted_mlm_and_starts_from_a_copy():
    torch.manual_seed(0)
    model = tiny("bert")
    obj = build_objective(ObjectiveConfig(name="bootstrap", bootstrap_mlm_weight=0.25), model, V, 10, 0, CPU)
    for t, s in zip(obj.module.teacher.parameters(), model.parameters()):
        assert torch.equal(t, s) and not t.requires_grad
    assert [id(p) for p in obj.trainable_parameters()] == [id(p) for p in obj.module.predictor.parameters()]
    x, y = batch(B=4, T=24)
    loss, stats = obj.train_loss(model, x, y, 0)
    assert loss.item() == pytest.approx(stats["latent_loss"] + 0.25 * stats["mlm_loss"], rel=1e-6)
    assert stats["ema_decay"] == 0.996 and default_scorer("bootstrap") == "pll"


# --------------------------------------------------------------------------------------------------
# end to end: training, bit-exact resume, export


def _full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides):
    _, _, a, b = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=4)
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert a == b
    ckpt = checkpoint_dirs(full)[-1]
    with safe_open(str(ckpt / "objective.safetensors"), "pt") as f:
        extra = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(str(checkpoint_dirs(parts)[-1] / "objective.safetensors"), "pt") as f:
        assert all(torch.equal(extra[k], f.get_tensor(k)) for k in f.keys())
    assert "objective.safetensors" in json.loads((ckpt / "manifest.json").read_text())["files"]
    return full, [r for r in a if "loss" in r], extra


def _export_holds_only_the_model(run, extra_keys):
    from tinylm.export.hf import export_hf

    out = export_hf(run, run / "hf", check=True)  # check=True: logits parity with the native model, per head
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    report = json.loads((out / "tinylm_export.json").read_text())
    assert report["checks"]["max_abs_logit_diff"] < 1e-4
    with safe_open(str(checkpoint_dirs(run)[-1] / "model.safetensors"), "pt") as f:
        assert len(keys) >= len(list(f.keys())) - 1  # the model's tensors (a tied head may be stored once)
    for forbidden in ("heads.", "teacher", "predictor"):
        assert not any(forbidden in k for k in keys), forbidden
    assert extra_keys and not set(extra_keys) & set(keys)
    return report


def test_mtp_pretrains_resumes_bit_exact_and_exports_without_its_heads(tmp_path, cache_dir, monkeypatch, one_thread):
    overrides = ("objective.mtp_heads=3", "objective.mtp_weight=0.5", "optim.name=muon", "train.log_every=1",
                 "model.dropout=0.1")
    full, rows, extra = _full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides)
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert {"mtp_loss_2", "mtp_loss_3", "mtp_main_loss"} <= set(rows[0])
    assert rows[0]["loss"] == pytest.approx((rows[0]["mtp_main_loss"] + 0.5 * (rows[0]["mtp_loss_2"] + rows[0]["mtp_loss_3"])) / 3,
                                            rel=1e-5)
    assert sorted({k.split(".")[1] for k in extra}) == ["0", "1"]  # two extra heads, trained (proj left zero init)
    assert any(k.endswith("proj.weight") and extra[k].abs().sum() > 0 for k in extra)
    report = _export_holds_only_the_model(full, list(extra))
    assert report["heads"] == ["causal"]


def test_bootstrap_pretrains_resumes_bit_exact_and_exports_the_student(tmp_path, cache_dir, monkeypatch, one_thread):
    overrides = ("model=bert_tiny", "model.d_ff=128", "objective=bootstrap", "train.log_every=1", "model.dropout=0.1",
                 "objective.ema_decay=0.9", "objective.ema_decay_end=0.95")
    full, rows, extra = _full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides)
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["mlm_loss"] < rows[0]["mlm_loss"]
    assert rows[-1]["ema_decay"] == pytest.approx(0.9 + 0.05 * 7 / 8)
    with safe_open(str(checkpoint_dirs(full)[-1] / "model.safetensors"), "pt") as f:
        student = {k: f.get_tensor(k) for k in f.keys()}
    # the teacher followed the student (EMA), without becoming it
    k = next(k for k in student if k.endswith("qk.weight"))
    assert not torch.equal(extra[f"teacher.{k}"], student[k])
    assert run_objective(full, "bert") == "bootstrap" and default_scorer(run_objective(full, "bert")) == "pll"
    report = _export_holds_only_the_model(full, list(extra))
    assert report["heads"] == ["masked"] and report["scorer"] == "pll"


def test_mtp_under_ddp_matches_one_process_with_the_global_batch(tmp_path, cache_dir):
    """The extra heads live outside DDP's model: their gradients are averaged over the ranks by the
    loop (distributed.average_grads), so 2 ranks x 4 rows train them as 1 process x 8 rows does."""
    from test_distributed import TEN_STEPS, _assert_same_run, run_ranks
    from safetensors.torch import load_file

    mtp_on = ("objective.mtp_heads=2", "optim.name=muon")
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    pretrain(smoke_config(one, cache_dir, *TEN_STEPS, *mtp_on, "train.batch_size=8"))
    run_ranks(ddp, cache_dir, *TEN_STEPS, *mtp_on, "train.batch_size=4")
    _assert_same_run(ddp, one, tol=1e-5)
    heads = [load_file(str(checkpoint_dirs(r)[-1] / "objective.safetensors")) for r in (one, ddp)]
    assert heads[0].keys() == heads[1].keys()
    for k in heads[0]:
        torch.testing.assert_close(heads[1][k], heads[0][k], atol=1e-5, rtol=0, msg=k)


def test_a_resume_with_other_objective_options_is_refused_in_one_line(tmp_path, cache_dir, one_thread):
    run = tmp_path / "run"
    pretrain(smoke_config(run, cache_dir, "objective.mtp_heads=2", "train.steps=4"))
    for overrides, says in [(("objective.mtp_heads=1",), "that this run has no use for"),
                            (("objective.mtp_heads=3",), "does not fit this run's objective")]:
        with pytest.raises(InputError, match=says) as e:
            pretrain(smoke_config(run, cache_dir, *overrides, "train.steps=6", "train.resume=auto"))
        assert "\n" not in str(e.value)
    assert not list(run.glob("config.resumed_at_*"))  # refused before anything was written


def test_a_bad_option_exits_2_with_one_error_line(tmp_path):
    from helpers import run_cli

    out = run_cli("tinylm.pretrain", "debug=cpu_smoke", "model=bert_tiny", "objective=mlm", "objective.mtp_heads=2",
                  f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}")
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "objective.mtp_heads=2" in lines[0] and "objective=clm" in lines[0]
    assert not (tmp_path / "run").exists()
