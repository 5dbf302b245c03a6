"""Milestone checkpoints (BabyLM 2025): the schedule at its boundaries, the folders a run writes,
and a resumed run writing every milestone exactly once."""

import json

import pytest
import torch
from helpers import smoke_config
from safetensors.torch import load_file

import tinylm.train.loop as loop_module
import tinylm.train.milestones as milestones_module
from tinylm.errors import InputError
from tinylm.train.metrics import read_metrics
from tinylm.train.milestones import MILESTONES, MilestoneWriter, crossed, existing_milestones, expected_milestones

M = 1_000_000
UNIT = 5  # words per "M" in the training tests: ~50 words per step cross several milestones at once
OVERRIDES = ("train.steps=12", "train.ckpt_every=4", "train.log_every=1", "train.eval_every=6", "train.threads=1",
             f"train.milestone_unit_words={UNIT}", "model.dropout=0.1")


def test_schedule_at_its_boundaries():
    assert MILESTONES == (*range(1, 11), *range(20, 101, 10), *range(200, 1001, 100)) and len(MILESTONES) == 28
    assert crossed(0, M - 1) == []
    assert crossed(0, M) == [1]  # exactly at 1M
    assert crossed(M, M + 1) == []  # ... and not again from there
    assert crossed(M - 1, 2 * M) == [1, 2]  # one step crossing two
    assert crossed(0, 3 * M + 7) == [1, 2, 3]
    assert crossed(10 * M, 20 * M - 1) == []  # past 10M the step is 10M
    assert crossed(int(9.5 * M), 20 * M) == [10, 20]
    assert crossed(90 * M, 100 * M) == [100]
    assert crossed(100 * M, 200 * M - 1) == []  # past 100M it is 100M
    assert crossed(100 * M, 300 * M) == [200, 300]
    assert crossed(999 * M, 1000 * M) == [1000]  # up to 1B ...
    assert crossed(1000 * M, 10**12) == []  # ... and no further
    assert crossed(0, 10**12) == list(MILESTONES)
    assert crossed(0, 5000, unit=1000) == [1, 2, 3, 4, 5]
    assert expected_milestones(25 * M) == [*range(1, 11), 20]


def test_writer_switched_off_or_misconfigured(tmp_path):
    model = torch.nn.Linear(2, 2)
    off = MilestoneWriter(tmp_path, model, {"family": "gpt"}, False, M, 0, {})
    assert off.update(1, 10, 5 * M) == [] and not (tmp_path / "milestones").exists()
    with pytest.raises(InputError, match="milestone_unit_words=0"):
        MilestoneWriter(tmp_path, model, {"family": "gpt"}, True, 0, 0, {})


def _record_saves(mp, calls, stop_at_step=None):
    real = milestones_module.save_milestone

    def save(run_dir, n, model, state):
        out = real(run_dir, n, model, state)
        calls.append((n, state["step"]))
        if state["step"] == stop_at_step:
            raise KeyboardInterrupt  # a crash after a milestone, before that step's checkpoint
        return out

    mp.setattr(milestones_module, "save_milestone", save)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("milestones") / "full"
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        _record_saves(mp, calls)
        summary = loop_module.pretrain(smoke_config(run, cache_dir, *OVERRIDES))
    return run, calls, summary


def _milestone(run, n):
    path = run / "milestones" / f"chck_{n}M"
    return json.loads((path / "state.json").read_text()), load_file(path / "model.safetensors")


def test_training_writes_every_crossed_milestone_once(full_run):
    run, calls, summary = full_run
    words_at = {r["step"]: r["words_seen"] for r in read_metrics(run) if "loss" in r}
    expected = expected_milestones(summary["words_seen"], UNIT)
    assert expected[:10] == list(range(1, 11)) and expected[-1] >= 20  # past 10 units the step is 10
    assert sorted(existing_milestones(run)) == expected
    assert sorted(n for n, _ in calls) == expected  # each written once
    per_step = {}
    for n, step in calls:
        per_step.setdefault(step, []).append(n)
    assert max(len(v) for v in per_step.values()) >= 2  # some step crossed two or more
    for n in expected:
        state, weights = _milestone(run, n)
        step = state["step"]
        # written at the first step whose words seen reach it, with the actual words seen recorded
        assert state["words_seen"] == words_at[step] >= n * UNIT > words_at.get(step - 1, 0)
        assert state["milestone"] == f"chck_{n}M" and state["milestone_words"] == n * UNIT
        assert state["unit_words"] == UNIT and state["model_config"]["d_model"] == 64
        assert len(state["tokenizer"]["sha256"]) == 64
        assert sorted(p.name for p in (run / "milestones" / f"chck_{n}M").iterdir()) == ["model.safetensors", "state.json"]
    for step, ns in per_step.items():  # milestones of one step hold that step's weights
        first = _milestone(run, ns[0])[1]
        for n in ns[1:]:
            assert all(torch.equal(first[k], v) for k, v in _milestone(run, n)[1].items())
        ckpt = run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"
        if ckpt.exists():  # ... the same weights the full checkpoint of that step holds
            assert all(torch.equal(first[k], v) for k, v in load_file(ckpt).items())


def test_resume_neither_duplicates_nor_skips_milestones(full_run, tmp_path, cache_dir, monkeypatch):
    full, full_calls, _ = full_run
    stop = 10  # crash after step 10's milestone(s), before step 12's checkpoint: resume from step 8
    assert any(step == stop for _, step in full_calls)
    parts = tmp_path / "parts"
    first, second = [], []
    with monkeypatch.context() as mp:
        _record_saves(mp, first, stop_at_step=stop)
        with pytest.raises(KeyboardInterrupt):
            loop_module.pretrain(smoke_config(parts, cache_dir, *OVERRIDES))
    with monkeypatch.context() as mp:
        _record_saves(mp, second)
        loop_module.pretrain(smoke_config(parts, cache_dir, *OVERRIDES, "train.resume=auto"))
    # the resumed run (from step 8) writes exactly the milestones after step 8: none before it again,
    # those of steps 9-10 once more in place, the rest for the first time
    assert second == [(n, s) for n, s in full_calls if s > 8]
    assert sorted(existing_milestones(parts)) == sorted(existing_milestones(full))
    for n in existing_milestones(full):
        (want_state, want), (got_state, got) = _milestone(full, n), _milestone(parts, n)
        assert got_state == want_state
        assert all(torch.equal(got[k], v) for k, v in want.items())  # bit for bit on CPU
