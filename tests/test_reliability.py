"""Fault injection, in process: damaged checkpoints, non-finite steps, rollback, stale branches,
leftovers, changed data, overwrites, and bad inputs that must leave the run directory untouched.
(Kills, signals and the run lock need real processes: tests/test_reliability_process.py.)"""

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import smoke_config
from safetensors.torch import load_file

import tinylm.train.loop as loop_module
from tinylm.errors import InputError
from tinylm.train.checkpoint import NonFiniteWeights, rotate, save_checkpoint, step_dirs, verify_checkpoint
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics
from tinylm.train.optim import lr_at
from tinylm.utils import temp_tag

BASE = ("train.steps=4", "train.ckpt_every=2", "train.keep_checkpoints=5", "train.log_every=1", "train.eval_every=2",
        "train.sample_tokens=2")


def said(capsys, caplog) -> str:
    """What a run told the user: its log lines (console, or the caller's logging before the run
    directory exists) and prints."""
    return capsys.readouterr().out + caplog.text


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, cache_dir):
    """A 4-step smoke run with checkpoints at steps 2 and 4: the reference every fault is compared to."""
    run = tmp_path_factory.mktemp("reliability") / "run"
    pretrain(smoke_config(run, cache_dir, *BASE))
    return run


def copy_run(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    return run


def flip_bit(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda c: c.joinpath("model.safetensors").write_bytes(c.joinpath("model.safetensors").read_bytes()[:500]),
    "empty": lambda c: c.joinpath("state.safetensors").write_bytes(b""),
    "missing file": lambda c: c.joinpath("state.json").unlink(),
    "flipped bit": lambda c: flip_bit(c / "model.safetensors"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_intact_one(damage, base_run, tmp_path, cache_dir, capsys, caplog):
    caplog.set_level(logging.INFO, logger="tinylm")
    run = copy_run(base_run, tmp_path)
    newest = run / "checkpoints" / "step_00000004"
    DAMAGE[damage](newest)
    assert verify_checkpoint(newest) is not None and verify_checkpoint(run / "checkpoints" / "step_00000002") is None
    pretrain(smoke_config(run, cache_dir, *BASE, "train.resume=auto"))
    out = said(capsys, caplog)
    assert f"checkpoint {newest} is damaged" in out and "resuming from" in out and "step_00000002 (step 2)" in out
    # the damaged one is kept aside, and the redone step 4 is bit-identical to the uninterrupted run's
    assert (run / "abandoned" / "after_step_2" / "step_00000004").is_dir()
    assert load_file(newest / "model.safetensors").keys() == load_file(base_run / "checkpoints/step_00000004/model.safetensors").keys()
    for k, v in load_file(base_run / "checkpoints/step_00000004/model.safetensors").items():
        assert torch.equal(load_file(newest / "model.safetensors")[k], v), k
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4]


def test_rotation_never_deletes_the_newest_intact_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=5)
    flip_bit(tmp_path / "checkpoints/step_00000002/model.safetensors", 4)
    rotate(tmp_path, keep=1)  # step 2 is the newest, but damaged: step 1 must stay
    assert [p.name for p in step_dirs(tmp_path)] == ["step_00000001", "step_00000002"]
    save_checkpoint(tmp_path, 3, model, opt, {}, keep=1)  # a new intact one: the old ones may go now
    assert [p.name for p in step_dirs(tmp_path)] == ["step_00000003"]


def test_non_finite_weights_are_never_written(tmp_path):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeights, match="weight"):
        save_checkpoint(tmp_path, 1, model, torch.optim.AdamW(model.parameters()), {}, keep=2)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def inject_inf_grads(monkeypatch, bad_backwards):
    """Make the gradient of the first parameter infinite on the given backward calls (1-based):
    a finite loss with an infinite gradient norm, the case issue #13 saw saved as NaN weights."""
    real_build = loop_module.build_model
    calls = {"n": 0}

    def build(cfg):
        model = real_build(cfg)
        first = next(model.parameters())

        def hook(grad):
            calls["n"] += 1
            return grad * math.inf if calls["n"] in bad_backwards else grad

        first.register_hook(hook)
        return model

    monkeypatch.setattr(loop_module, "build_model", build)


def all_weights_finite(run):
    for ckpt in step_dirs(run):
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values()), ckpt


def test_infinite_gradient_steps_are_skipped_counted_and_never_saved(tmp_path, cache_dir, monkeypatch, capsys, caplog):
    inject_inf_grads(monkeypatch, {3, 4})
    run = tmp_path / "run"
    summary = pretrain(smoke_config(run, cache_dir, *BASE))
    assert summary["steps"] == 4 and math.isfinite(summary["final_dev_loss"])
    assert "step 3: loss=" in said(capsys, caplog)
    state = json.loads((run / "checkpoints/step_00000004/state.json").read_text())
    assert state["bad_steps_skipped"] == 2
    all_weights_finite(run)
    rows = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["grad_norm"]) for r in rows)


def test_too_many_bad_steps_stop_with_the_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    inject_inf_grads(monkeypatch, set(range(3, 100)))
    run = tmp_path / "run"
    with pytest.raises(InputError, match=r"3 non-finite steps in a row up to step 3 .* last good checkpoint: .*step_00000002"):
        pretrain(smoke_config(run, cache_dir, *BASE, "train.max_bad_steps=3"))
    assert [p.name for p in step_dirs(run)] == ["step_00000002"]
    all_weights_finite(run)


def test_rollback_reloads_the_last_good_checkpoint_and_lowers_the_lr(tmp_path, cache_dir, monkeypatch, capsys, caplog):
    inject_inf_grads(monkeypatch, {3, 4})
    run = tmp_path / "run"
    cfg = smoke_config(run, cache_dir, *BASE, "train.max_bad_steps=2", "train.on_divergence=rollback",
                       "train.rollback_lr_factor=0.25")
    summary = pretrain(cfg)
    assert summary["steps"] == 4
    assert "rollback: reloaded" in said(capsys, caplog)
    rows = {r["step"]: r for r in read_metrics(run) if "loss" in r}
    assert sorted(rows) == [1, 2, 3, 4]  # one history: rows of the abandoned attempt were dropped
    assert rows[3]["lr"] == pytest.approx(0.25 * lr_at(2, 4, cfg.optim))
    assert rows[2]["lr"] == pytest.approx(lr_at(1, 4, cfg.optim))
    all_weights_finite(run)


def test_resume_from_an_older_checkpoint_moves_the_newer_aside(base_run, tmp_path, cache_dir):
    run = copy_run(base_run, tmp_path)
    old = run / "checkpoints" / "step_00000002"
    pretrain(smoke_config(run, cache_dir, *BASE, "train.steps=3", f"train.resume={old}"))
    aside = run / "abandoned" / "after_step_2" / "step_00000004"
    assert aside.is_dir() and snapshot(aside) == snapshot(base_run / "checkpoints" / "step_00000004")
    assert [p.name for p in step_dirs(run)] == ["step_00000002", "step_00000003"]
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3]
    # auto now continues the new branch, never the abandoned step 4
    pretrain(smoke_config(run, cache_dir, *BASE, "train.steps=3", "train.resume=auto"))
    assert [p.name for p in step_dirs(run)] == ["step_00000002", "step_00000003"]


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_dead_processes_are_removed_at_launch(base_run, tmp_path, cache_dir, capsys, caplog):
    run = copy_run(base_run, tmp_path)
    pid = dead_pid()
    torn = run / "checkpoints" / f".step_00000006.{temp_tag(pid)}.abcd1234.tmp"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 1000)
    stray = run / f".metrics.jsonl.{temp_tag(pid)}.x1.tmp"
    stray.write_text("half")
    live = run / f".metrics.jsonl.{temp_tag()}.x2.tmp"  # a live process's: left alone
    live.write_text("busy")
    cache_tmp = cache_dir / "data" / f".0123456789abcdef.{temp_tag(pid)}.zz.tmp"
    cache_tmp.mkdir(parents=True)
    elsewhere = run / f".config.yaml.pid{pid}-another-host.x3.tmp"  # another machine's (shared filesystem): left alone
    elsewhere.write_text("theirs")
    pretrain(smoke_config(run, cache_dir, *BASE, "train.steps=5", "train.resume=auto"))
    out = said(capsys, caplog)
    assert not torn.exists() and not stray.exists() and not cache_tmp.exists() and live.exists() and elsewhere.exists()
    assert f"cleanup: removed {torn}" in out and f"cleanup: removed {cache_tmp}" in out


def test_a_second_launch_into_a_locked_run_is_refused_naming_the_holder(base_run, cache_dir):
    from tinylm.train.runlock import RunLock

    before = snapshot(base_run)
    with RunLock(base_run):  # another holder of the OS lock: here this test process itself
        with pytest.raises(InputError, match=f"run directory {base_run} is in use by another tinylm process "
                                             rf"\(PID {os.getpid()}\); wait for it"):
            pretrain(smoke_config(base_run, cache_dir, *BASE, "train.resume=auto"))
    assert snapshot(base_run) == before


def test_never_starts_over_a_run_stopped_before_its_first_checkpoint(tmp_path, cache_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    before = snapshot(run)
    with pytest.raises(InputError, match="already holds a run .*config.yaml, metrics.jsonl.*train.resume=auto"):
        pretrain(smoke_config(run, cache_dir, *BASE))
    with pytest.raises(InputError, match="no checkpoint .*stopped before its first checkpoint.*new folder"):
        pretrain(smoke_config(run, cache_dir, *BASE, "train.resume=auto"))
    assert snapshot(run) == before


def test_resume_on_other_data_is_refused_unless_declared(base_run, tmp_path, cache_dir):
    run = copy_run(base_run, tmp_path)
    before = snapshot(run)
    other = ("data.default_words=15000", "train.resume=auto", "train.steps=5")
    with pytest.raises(InputError, match=r"trained on other data \(data key .*tokenizer sha256.*train.resume_data=changed"):
        pretrain(smoke_config(run, cache_dir, *BASE, *other))
    assert snapshot(run) == before
    pretrain(smoke_config(run, cache_dir, *BASE, *other, "train.resume_data=changed"))
    state = json.loads((run / "checkpoints/step_00000005/state.json").read_text())
    assert state["data_changes"][0]["at_step"] == 4
    from tinylm.package.compliance import check_compliance

    checks = {c["name"]: c for c in check_compliance(run)["checks"]}
    assert checks["data_changed"]["status"] == "warn" and "at step 4" in checks["data_changed"]["detail"]


BAD_CONFIG = {
    "train.steps=0": "train.steps=0 must be a positive integer",
    "train.ckpt_every=0": "train.ckpt_every=0 must be a positive integer",
    "train.log_every=-1": "train.log_every=-1 must be a positive integer",
    "train.eval_every=0": "train.eval_every=0 must be a positive integer",
    "train.grad_accum=0": "train.grad_accum=0 must be a positive integer",
    "train.batch_size=0": "train.batch_size=0 must be a positive integer",
    "optim.lr=-0.1": "optim.lr=-0.1 is negative",
    "tokenizer.vocab_size=7": "tokenizer.vocab_size=7 leaves no room beside the 7 special tokens",
    "train.seq_len=16": "train.seq_len=16 but checkpoint",
    "train.on_divergence=retry": "train.on_divergence='retry' is not an option",
}


@pytest.mark.parametrize("override", sorted(BAD_CONFIG))
def test_bad_config_is_refused_before_anything_is_written(override, base_run, cache_dir):
    before = snapshot(base_run)
    with pytest.raises(InputError) as e:
        pretrain(smoke_config(base_run, cache_dir, *BASE, "train.resume=auto", override))
    assert BAD_CONFIG[override] in str(e.value)
    assert snapshot(base_run) == before


def test_outputs_never_replace_or_sit_inside_a_run(base_run, tmp_path):
    from tinylm.export.hf import export_hf

    before = snapshot(base_run)
    (tmp_path / "file.txt").write_text("x")
    for out, message in [(base_run, "is a run directory"), (base_run.parent, "holds the run directory"),
                         (base_run / "checkpoints" / "hf", "inside the run's checkpoints/"),
                         (base_run / "config.yaml", "is a file"), (tmp_path / "file.txt", "is a file")]:
        with pytest.raises(InputError, match=message):
            export_hf(base_run, out, overwrite=True, check=False)
    assert snapshot(base_run) == before


def test_failed_package_keeps_the_previous_one(base_run, tmp_path):
    from tinylm.package.build import build_package
    from tinylm.package.config import PackageConfig

    run = copy_run(base_run, tmp_path)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("budget_words: 0", "budget_words: 10"))  # now non-compliant
    previous = tmp_path / "sub"
    previous.mkdir()
    (previous / "README.md").write_text("the good package")
    with pytest.raises(InputError, match="not BabyLM-compliant"):
        build_package(PackageConfig(run=str(run), out=str(previous), overwrite=True, check=False))
    assert sorted(p.name for p in previous.iterdir()) == ["README.md"]
    assert (previous / "README.md").read_text() == "the good package"
    assert json.loads((tmp_path / "sub.compliance.json").read_text())["compliant"] is False


def test_stored_configs_are_read_without_resolving_environment_variables(tmp_path, monkeypatch):
    from tinylm.eval.run import _run_prompts

    monkeypatch.setenv("TINYLM_TEST_SECRET", "s3cret")
    (tmp_path / "config.yaml").write_text("train:\n  sample_prompts: ['${oc.env:TINYLM_TEST_SECRET}', 'hi']\n"
                                          "objective:\n  name: ${oc.env:TINYLM_TEST_SECRET}\n")
    assert _run_prompts(tmp_path) == ["${oc.env:TINYLM_TEST_SECRET}", "hi"]
    from tinylm.package.compliance import run_config

    assert run_config(tmp_path)["objective"]["name"] == "${oc.env:TINYLM_TEST_SECRET}"


@pytest.mark.parametrize("record, message", [
    ({"sentence_good": 3, "sentence_bad": "b", "UID": "u", "linguistics_term": "t"}, "`sentence_good` must be a string"),
    ({"sentences": "a\tb", "ratio": "high"}, "`ratio` must be a finite number, found 'high'"),
])
def test_eval_records_of_the_wrong_type_name_file_and_line(record, message, tmp_path):
    from tinylm.eval.formats import read_tasks

    path = tmp_path / "task.jsonl"
    good = {"sentence_good": "a", "sentence_bad": "b", "UID": "u", "linguistics_term": "t"} if "UID" in record else \
        {"sentences": "a\tb", "ratio": 0.5}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError, match=f"task.jsonl line 2: {message}"):
        read_tasks(path)


def test_eval_out_may_not_be_a_file(base_run, tmp_path):
    from tinylm.eval.config import EvalConfig
    from tinylm.eval.run import evaluate

    (tmp_path / "out.txt").write_text("x")
    with pytest.raises(InputError, match="out=.*out.txt is a file"):
        evaluate(EvalConfig(ckpt=str(base_run), tasks=str(tmp_path), out=str(tmp_path / "out.txt")))
    assert (tmp_path / "out.txt").read_text() == "x"


def test_auto_threads_never_exceed_the_free_physical_cores():
    from tinylm.train.threads import auto_threads, physical_cores, set_threads

    before = torch.get_num_threads()
    try:
        n, why = auto_threads()
        cpus = os.sched_getaffinity(0)
        assert 1 <= n <= physical_cores(cpus) <= len(cpus)
        assert n <= max(1, math.floor(len(cpus) - os.getloadavg()[0]) + 1)  # the load moves between the two reads
        line = set_threads(0, torch.device("cpu"))
        assert line.startswith("threads: ") and "auto:" in line and torch.get_num_threads() == int(line.split()[1])
        assert set_threads(3, torch.device("cpu")) == "threads: 3 (train.threads)" and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_50_mb_line_is_read_in_bounded_pieces(tmp_path):
    """data=text: one 50 MB line without a newline becomes ~1 M-character documents, and reading
    it never holds much more than a few pieces (the README promises bounded memory)."""
    import tracemalloc

    from tinylm.data.readers_common import FileStats, read_segments
    from tinylm.data.readers_files import MAX_LINE_CHARS, _lines_as_documents

    chunk = " ".join(f"word{i % 997}" for i in range(100_000)) + " "  # ~0.8 MB
    path = tmp_path / "one_line.txt"
    with open(path, "w") as f:
        for _ in range(64):
            f.write(chunk)
    size = path.stat().st_size
    assert size > 50_000_000
    tracemalloc.start()
    n_docs, n_words, longest = 0, 0, 0
    for doc in _lines_as_documents(read_segments(path, FileStats(str(path)), "data.paths", "error")):
        assert doc.startswith("word")  # cut at whitespace, never inside a word
        n_docs, n_words, longest = n_docs + 1, n_words + doc.count("word"), max(longest, len(doc))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n_words == 64 * 100_000  # every word once
    assert longest < MAX_LINE_CHARS + 3 * (1 << 20) and n_docs >= size // (MAX_LINE_CHARS + 3 * (1 << 20))
    assert peak < 40_000_000, peak  # a few pieces of a few MB: never the whole 50 MB line
