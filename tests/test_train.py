"""The training loop end to end on CPU: learning, run-directory contents, resume, crash safety."""

import json

import pytest
import torch
from helpers import interrupt_after_checkpoint, smoke_config
from safetensors.torch import load_file

import tinylm.train.checkpoint as checkpoint_module
from tinylm.train.checkpoint import checkpoint_dirs
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics
from tinylm.train.optim import lr_at
from tinylm.config import OptimConfig


class Interrupt(Exception):
    pass


def test_short_run_learns_and_fills_the_run_directory(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    overrides = ("train.steps=60", "train.batch_size=16", "train.eval_every=20", "optim.warmup_steps=10")
    summary = pretrain(smoke_config(run_dir, cache_dir, *overrides))
    rows = read_metrics(run_dir)
    dev = [r["dev_loss"] for r in rows if "dev_loss" in r]
    train_rows = [r for r in rows if "loss" in r]
    # the loss falls visibly from ln(V) at initialisation and ends below the unigram baseline
    assert train_rows[0]["loss"] > 5.5 and dev[-1] < train_rows[0]["loss"] - 1.0, (train_rows[0], dev)
    assert dev[-1] < dev[0]
    assert summary["final_dev_loss"] == dev[-1] and summary["beats_unigram"], summary
    for key in ("step", "tokens_seen", "words_seen", "loss", "lr", "grad_norm", "tokens_per_s"):
        assert key in train_rows[-1]
    steps = [r["step"] for r in train_rows]
    assert steps == sorted(steps) and steps[-1] == 60
    assert train_rows[-1]["tokens_seen"] == 60 * 16 * 32
    # words seen: the exact count of word-initial target tokens, below the tokens seen
    assert 0 < train_rows[-1]["words_seen"] < train_rows[-1]["tokens_seen"]
    for name in ("config.yaml", "data_report.json", "summary.json", "samples.txt", "loss_curve.png"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## step 60" in (run_dir / "samples.txt").read_text()
    ckpt = checkpoint_dirs(run_dir)[-1]
    assert ckpt.name == "step_00000060" and len(checkpoint_dirs(run_dir)) == 2  # keep_checkpoints
    assert sorted(p.name for p in ckpt.iterdir()) == ["manifest.json", "model.safetensors", "state.json", "state.safetensors"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 60 and state["model_config"]["d_model"] == 64
    assert "optim.0.exp_avg" in load_file(ckpt / "state.safetensors")


def test_resume_is_bit_exact(tmp_path, cache_dir, monkeypatch):
    overrides = ("train.steps=12", "train.ckpt_every=4", "train.log_every=1", "train.eval_every=3", "model.dropout=0.1")
    full = tmp_path / "full"
    pretrain(smoke_config(full, cache_dir, *overrides))

    parts = tmp_path / "parts"
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, 8, Interrupt)
        with pytest.raises(Interrupt):
            pretrain(smoke_config(parts, cache_dir, *overrides))
    # rows logged after the checkpoint would be logged again: simulate a crash at step 10
    with open(parts / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 9, "loss": -1.0}) + "\n")
    pretrain(smoke_config(parts, cache_dir, *overrides, "train.resume=auto"))

    drop = ("tokens_per_s",)  # wall-clock
    a = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(full)]
    b = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(parts)]
    assert a == b  # losses, grad norms, dev losses, words seen: equal bit for bit
    wa = load_file(checkpoint_dirs(full)[-1] / "model.safetensors")
    wb = load_file(checkpoint_dirs(parts)[-1] / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (parts / "config.resumed_at_8.yaml").exists()


def test_crash_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, cache_dir, monkeypatch):
    run_dir = tmp_path / "run"
    real_save_file = checkpoint_module.save_file

    def torn_write(tensors, filename, *args, **kwargs):
        if "step_00000008" in str(filename) or ".step_00000008." in str(filename):
            with open(filename, "wb") as f:  # half a file, then the process "dies"
                f.write(b"\x00" * 100)
            raise Interrupt
        return real_save_file(tensors, filename, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_module, "save_file", torn_write)
        with pytest.raises(Interrupt):
            pretrain(smoke_config(run_dir, cache_dir))
    ckpts = checkpoint_dirs(run_dir)
    assert [p.name for p in ckpts] == ["step_00000004"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name != "step_00000004"]  # no torn folder
    summary = pretrain(smoke_config(run_dir, cache_dir, "train.resume=auto"))
    assert summary["steps"] == 8


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_lr_schedules_by_hand(schedule):
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule=schedule, decay_fraction=0.2)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1) and lr_at(9, 100, cfg) == pytest.approx(1.0)
    if schedule == "cosine":
        assert lr_at(55, 100, cfg) == pytest.approx(0.55)  # halfway through the decay: (1 + 0.1) / 2
        assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    elif schedule == "wsd":
        assert lr_at(79, 100, cfg) == 1.0
        assert lr_at(89, 100, cfg) == pytest.approx(1.0 - 0.9 * 10 / 20)
        assert lr_at(99, 100, cfg) == pytest.approx(0.1)
    else:
        assert lr_at(99, 100, cfg) == 1.0


def test_gradient_accumulation_matches_one_large_batch(tmp_path, cache_dir):
    """2 micro-batches of 2 see the same windows as 1 batch of 4 (the loader's order is shared), and
    averaging their gradients gives the large batch's update, up to float rounding."""
    common = ("train.steps=4", "train.log_every=1", "train.eval_every=4")
    pretrain(smoke_config(tmp_path / "accum", cache_dir, *common, "train.batch_size=2", "train.grad_accum=2"))
    pretrain(smoke_config(tmp_path / "large", cache_dir, *common, "train.batch_size=4", "train.grad_accum=1"))
    a, b = read_metrics(tmp_path / "accum"), read_metrics(tmp_path / "large")
    assert [r["tokens_seen"] for r in a] == [r["tokens_seen"] for r in b]
    assert [r["words_seen"] for r in a] == [r["words_seen"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)


def test_checkpoint_from_before_a_new_model_field_still_resumes(tmp_path, cache_dir):
    """Fields added to ModelConfig later are missing from older checkpoints: they take defaults."""
    run_dir = tmp_path / "run"
    pretrain(smoke_config(run_dir, cache_dir, "train.steps=4"))
    ckpt = checkpoint_dirs(run_dir)[-1]
    state = json.loads((ckpt / "state.json").read_text())
    del state["model_config"]["init_std"]
    (ckpt / "state.json").write_text(json.dumps(state))
    (ckpt / "manifest.json").unlink()  # older checkpoints had no manifest either
    summary = pretrain(smoke_config(run_dir, cache_dir, "train.steps=8", "train.resume=auto"))
    assert summary["steps"] == 8


def test_torch_compile_trains_like_eager(tmp_path, cache_dir):
    """train.compile=true (inductor on CPU) gives the eager run's losses, and its checkpoint holds
    the plain module's weights (no `_orig_mod.` prefixes), so resume, eval and export work."""
    common = ("train.steps=4", "train.log_every=1", "train.eval_every=4")
    pretrain(smoke_config(tmp_path / "eager", cache_dir, *common))
    pretrain(smoke_config(tmp_path / "compiled", cache_dir, *common, "train.compile=true"))
    eager = [r["loss"] for r in read_metrics(tmp_path / "eager") if "loss" in r]
    compiled = [r["loss"] for r in read_metrics(tmp_path / "compiled") if "loss" in r]
    assert compiled == pytest.approx(eager, rel=1e-4)
    keys = load_file(checkpoint_dirs(tmp_path / "compiled")[-1] / "model.safetensors").keys()
    assert keys == load_file(checkpoint_dirs(tmp_path / "eager")[-1] / "model.safetensors").keys()
