"""train.eval_tasks: a minimal-pair folder scored at every milestone and at the end, with the scorer
the objective calls for; each row equals what tinylm.eval gives for that milestone's weights."""


import pytest
from helpers import ROOT, smoke_config

from tinylm.errors import InputError
from tinylm.eval.config import EvalConfig
from tinylm.eval.run import evaluate
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics

SAMPLES = ROOT.parent / "shared" / "eval_samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/eval_samples is absent")


@needs_samples
def test_milestone_rows_match_tinylm_eval(tmp_path, cache_dir, objective="clm", scorer="causal"):
    """(GPT-BERT's mntp tracking is checked the same way in tests/test_babylm.py.)"""
    tasks = SAMPLES / "babylm2025" / "full_eval" / "blimp_filtered"
    run = tmp_path / "run"
    pretrain(smoke_config(run, cache_dir, f"objective={objective}", f"train.eval_tasks={tasks}",
                          "train.eval_tasks_max_items=4", "train.milestone_unit_words=120"))
    rows = [r for r in read_metrics(run) if "eval_macro" in r]
    written = sorted((run / "milestones").iterdir())
    assert len(written) >= 2
    named = [m for r in rows if "eval_milestone" in r for m in r["eval_milestone"].split(",")]
    assert sorted(named) == sorted(p.name for p in written)  # one row per milestone step, every milestone in one
    assert rows[-1]["step"] == 8 and all(r["eval_scorer"] == scorer for r in rows)
    assert [r["words_seen"] for r in rows] == sorted(r["words_seen"] for r in rows)
    assert (run / "eval_curve.png").stat().st_size > 1000
    # the row of a milestone is what a full evaluation of that milestone's weights says
    first = next(r for r in rows if "eval_milestone" in r)
    ckpt = run / "milestones" / first["eval_milestone"].split(",")[0]
    ref = evaluate(EvalConfig(ckpt=str(ckpt), tasks=str(tasks), out=str(tmp_path / "ev"), scorer=scorer, max_items=4,
                              dev=False, samples=False, batch_size=16))
    for task, value in ref["summary"].items():
        assert first[f"eval/{task}"] == pytest.approx(value, abs=1e-12), task
    accuracy_tasks = [v for t, v in ref["summary"].items() if t != "wug"]
    assert first["eval_macro"] == pytest.approx(sum(accuracy_tasks) / len(accuracy_tasks), abs=1e-12)


def test_a_missing_folder_is_refused_before_the_run_starts(tmp_path, cache_dir):
    run = tmp_path / "run"
    with pytest.raises(InputError, match="train.eval_tasks"):
        pretrain(smoke_config(run, cache_dir, f"train.eval_tasks={tmp_path / 'nowhere'}"))
    assert not run.exists()
