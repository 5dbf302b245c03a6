"""BabyLM recipes (conf/experiment/babylm_*.yaml) and train.epochs: each recipe composes into a
run the BabyLM rules allow (exact word budget, at most 10 epochs, milestones on), and epochs turn
into the step count that visits the train split's windows that many times."""

from __future__ import annotations

import json

import pytest

from helpers import ROOT, compose_pretrain, smoke_config
from tinylm.errors import InputError
from tinylm.train.loop import pretrain, steps_for_epochs

RECIPES = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("babylm_*.yaml") if p.stem != "babylm_cpu")
BUDGETS = {"strict_small": 10_000_000, "strict": 100_000_000}


def test_all_tracks_and_families_have_a_recipe():
    expected = {f"babylm_{track}_{family}" for track in BUDGETS for family in ("gpt_bert", "elc_bert", "gpt", "mlstm")}
    assert expected <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_follows_the_babylm_rules(name):
    cfg = compose_pretrain(f"experiment={name}", "run_dir=unused")
    track = "strict_small" if name.startswith("babylm_strict_small_") else "strict"
    assert cfg.data.kind == "babylm"
    assert cfg.data.budget_words == BUDGETS[track]
    assert 0 < cfg.train.epochs <= 10
    assert cfg.train.milestones
    assert cfg.train.seq_len <= cfg.model.max_seq_len
    family = name.removeprefix(f"babylm_{track}_")
    expected_objective = {"gpt_bert": "hybrid", "elc_bert": "mlm", "gpt": "clm", "mlstm": "clm"}[family]
    assert cfg.objective.name == expected_objective
    assert cfg.model.family == {"gpt_bert": "bert", "elc_bert": "bert", "gpt": "gpt", "mlstm": "mlstm"}[family]
    if cfg.model.family == "bert":  # GPT-BERT is LTG-BERT without ELC's layer mixing
        assert cfg.model.bert_arch == "ltg" and cfg.model.bert_elc == (family == "elc_bert")


def test_steps_for_epochs_counts_windows(tmp_path):
    cfg = compose_pretrain("run_dir=unused", "train.seq_len=10", "train.batch_size=4", "train.grad_accum=2", "train.epochs=3")
    # 1001 tokens -> 100 windows of 10 targets; 3 epochs = 300 rows; 8 rows per step -> 37 steps
    assert steps_for_epochs(cfg.train, 1001) == 37
    cfg = compose_pretrain("run_dir=unused", "train.seq_len=10", "train.batch_size=64", "train.epochs=0.5")
    with pytest.raises(InputError, match="train.epochs"):
        steps_for_epochs(cfg.train, 1001)


def test_epochs_set_the_steps_and_bound_the_words(tmp_path, cache_dir):
    run = tmp_path / "run"
    summary = pretrain(smoke_config(run, cache_dir, "train.epochs=0.25", "train.steps=999999", "train.eval_every=1000", "train.ckpt_every=1000"))
    report = json.loads((run / "data_report.json").read_text())
    windows = (report["tokens_train"] - 1) // 32
    assert summary["steps"] == int(0.25 * windows // 4)  # cpu_smoke: seq_len 32, batch 4
    assert summary["words_seen"] <= 0.25 * report["words_train"]
    saved = (run / "config.yaml").read_text()
    assert f"steps: {summary['steps']}" in saved  # the derived count is what the run records


def test_babylm_cpu_recipe_trains_on_short_documents(tmp_path, cache_dir):
    """babylm_cpu (the 30-CPU-minute recipe) composes and trains; its ~24-word documents give the model a
    BOS every sentence or two, as the minimal-pair scorers present a sentence (BOS + text)."""
    from test_babylm import babylm_folder

    corpus = babylm_folder(tmp_path / "babylm")
    cfg = compose_pretrain("experiment=babylm_cpu", f"data.root={corpus}", f"data.cache_dir={cache_dir}", f"run_dir={tmp_path / 'run'}",
                           "train.steps=4", "train.batch_size=4", "train.seq_len=32", "tokenizer.vocab_size=320", "train.threads=1",
                           "train.progress=false", "train.milestones=false", "train.eval_every=4", "train.eval_batches=1")
    assert (cfg.model.family, cfg.objective.name, cfg.optim.name, cfg.train.doc_mask) == ("gpt", "clm", "muon", True)
    summary = pretrain(cfg)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    words_per_doc = report["words_train"] / report["documents_train"]
    assert summary["steps"] == 4 and 12 <= words_per_doc <= 30, words_per_doc
