"""curriculum.seq_len_trigger=loss (tinylm/data/growlength.py): stage switches on a hand-made loss
sequence at hand-computed steps, the schedule as the latest switch, the loader's batches and
state, and a run that resumes bit-exactly across a switch."""

import json

import pytest
import torch
from helpers import interrupt_after_checkpoint, smoke_config
from test_curriculum import _shapes, build_shard, loader

from safetensors.torch import load_file

from tinylm.data.growlength import LossPlateau
from tinylm.eval.run import training_window
from tinylm.train.checkpoint import checkpoint_dirs
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics

# EMA decay 0.5 keeps every value exact in binary. Stage 0 sees 8, then 4s:
#   n:    1   2    3     4      5       6
#   ema:  8   6    5     4.5    4.25    4.125
#   ema[n-2] - ema[n] vs tol * ema[n-2] (tol 0.1): n=4: 6-4.5=1.5 >= 0.6; n=5: 0.75 >= 0.5;
#   n=6: 4.5-4.125=0.375 < 0.45 -> plateau after step 6 (n=3 is below min_steps=4).
# Stage 1 sees 3s: the EMA is flat at once, but min_steps=4 holds it to step 6 + 4 = 10.
LOSSES = [8, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3]
PLATEAU = dict(window=2, tol=0.1, min_steps=4, ema=0.5)


def test_the_trigger_switches_at_the_hand_computed_steps():
    trig = LossPlateau(3, **PLATEAU)
    switches = {}
    for step, loss in enumerate(LOSSES, 1):
        reason = trig.observe(float(loss), 0)
        if reason:
            switches[step] = (trig.stage, reason)
        if step == 5:
            assert trig.ema == 4.25 and trig.history == [5.0, 4.5, 4.25]
    assert switches == {6: (1, "plateau"), 10: (2, "plateau")}
    assert trig.stage == 2  # the last stage stays


def test_the_schedule_is_the_latest_switch():
    trig = LossPlateau(3, **PLATEAU)
    assert [trig.observe(8.0 - s, 0) for s in range(3)] == [None] * 3  # still improving fast
    assert trig.observe(5.0, 1) == "schedule" and trig.stage == 1 and trig.steps == 0 and trig.history == []
    assert trig.observe(4.0, 2) == "schedule" and trig.stage == 2
    with pytest.raises(ValueError, match="seq_len_plateau_window"):
        LossPlateau(3, window=0, tol=0.1, min_steps=1, ema=0.5)


def test_the_loader_changes_seq_len_at_the_switch_and_keeps_tokens_per_step():
    shard = build_shard()
    kw = dict(seq_lens=[8, 16, 32], seq_len_trigger="loss", seq_len_plateau_window=2, seq_len_plateau_tol=0.1,
              seq_len_plateau_min_steps=4, seq_len_plateau_ema=0.5, seq_len_boundaries=[1000, 2000])
    ld = loader(shard, steps=100, seq_len=32, batch_size=4, grad_accum=2, **kw)
    shapes, events = [], {}
    for step, loss in enumerate(LOSSES, 1):
        shapes += _shapes(ld, 2)
        switch = ld.observe_loss(float(loss))
        if switch:
            events[step] = switch
        if step == 8:
            state = json.loads(json.dumps(ld.state_dict()))  # as a checkpoint stores it
    assert events == {6: {"seq_len": 16, "seq_len_switch": "plateau"}, 10: {"seq_len": 32, "seq_len_switch": "plateau"}}
    assert shapes == [(16, 8)] * 12 + [(8, 16)] * 8 + [(4, 32)] * 8  # two micro-batches per step, 128 tokens each
    resumed = loader(shard, steps=100, seq_len=32, batch_size=4, grad_accum=2, **kw)
    resumed.load_state_dict(state)
    assert resumed.plateau.state_dict() == state["seq_len_trigger"] and resumed.plateau.steps == 2
    assert [resumed.observe_loss(3.0), resumed.observe_loss(3.0)] == [None, {"seq_len": 32, "seq_len_switch": "plateau"}]
    # the default trigger never reports a switch
    assert loader(shard, steps=10, seq_len=32, seq_lens=[8, 32]).observe_loss(1.0) is None
    with pytest.raises(ValueError, match="seq_len_trigger"):
        loader(shard, seq_len=32, seq_lens=[8, 32], seq_len_trigger="plateau")


OVERRIDES = ("curriculum=seq_len", "curriculum.seq_len_fractions=[0.25,0.5,1.0]", "curriculum.seq_len_boundaries=[1000,2000]",
             "curriculum.seq_len_trigger=loss", "curriculum.seq_len_plateau_window=2", "curriculum.seq_len_plateau_tol=0.5",
             "curriculum.seq_len_plateau_min_steps=3", "train.steps=10", "train.ckpt_every=4", "train.log_every=1",
             "train.eval_every=5")


def test_a_loss_triggered_run_resumes_bit_exact_across_a_switch(tmp_path, cache_dir, monkeypatch):
    full = pretrain(smoke_config(tmp_path / "full", cache_dir, *OVERRIDES))
    rows = read_metrics(tmp_path / "full")
    switches = [(r["step"], r["seq_len"]) for r in rows if "seq_len_switch" in r]
    # a 50% tolerance over 2 steps: the EMA of a slowly falling loss plateaus as soon as min_steps allows
    assert switches == [(3, 16), (6, 32)] and full["steps"] == 10
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, 4)
        with pytest.raises(KeyboardInterrupt):
            pretrain(smoke_config(tmp_path / "parts", cache_dir, *OVERRIDES))
    state = json.loads((checkpoint_dirs(tmp_path / "parts")[-1] / "state.json").read_text())
    assert state["step"] == 4 and state["loader"]["seq_len_trigger"]["stage"] == 1
    assert state["loader"]["seq_len_trigger"]["steps"] == 1  # mid-stage: the EMA state must survive the resume
    # tinylm.eval scores in the longest window trained on: stage 1 here (the schedule alone would say 8)
    assert training_window(tmp_path / "parts", state) == 16
    switched_now = {**state, "loader": {**state["loader"], "seq_len_trigger": {"stage": 2, "steps": 0}}}
    assert training_window(tmp_path / "parts", switched_now) == 16  # a switch at the checkpoint's step: not trained yet
    pretrain(smoke_config(tmp_path / "parts", cache_dir, *OVERRIDES, "train.resume=auto"))
    drop = ("tokens_per_s",)
    a = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    b = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(tmp_path / "parts")]
    assert a == b
    final = [load_file(checkpoint_dirs(p)[-1] / "model.safetensors") for p in (tmp_path / "full", tmp_path / "parts")]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])
