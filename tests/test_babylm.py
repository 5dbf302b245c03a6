"""`make babylm` (python -m tinylm.babylm) end to end at smoke scale: a tiny corpus in the BabyLM
layout -> data -> GPT-BERT pretraining (the babylm_strict_small_gpt_bert recipe at smoke scale) with milestones and the fast set scored at each -> the full
set evaluated with the objective's scorer -> a submission folder; and bad input stops before training."""

import json

import pytest
from helpers import run_cli

from tinylm.babylm import main, run, split_args
from tinylm.data.default_corpus import generate_documents
from tinylm.errors import InputError

DOMAINS = ("childes", "simple_wiki", "gutenberg")


def babylm_folder(root):
    """train_10M/<domain>.train with a few hundred words each, and dev/<domain>.dev beside it."""
    (root / "train_10M").mkdir(parents=True)
    (root / "dev").mkdir()
    for i, domain in enumerate(DOMAINS):
        docs = generate_documents(900, seed=i)
        cut = len(docs) * 4 // 5
        (root / "train_10M" / f"{domain}.train").write_text("\n".join(docs[:cut]) + "\n")
        (root / "dev" / f"{domain}.dev").write_text("\n".join(docs[cut:]) + "\n")
    return root / "train_10M"


def pair_folder(root):
    """A BLiMP-format task folder of 8 pairs (full_eval/blimp_filtered layout)."""
    folder = root / "full_eval" / "blimp_filtered"
    folder.mkdir(parents=True)
    pairs = [("the dog is happy .", "the dog are happy ."), ("she sees the cat .", "she see the cat ."),
             ("they were here .", "they was here ."), ("a boy runs .", "a boy run .")] * 2
    (folder / "agreement.jsonl").write_text("".join(
        json.dumps({"sentence_good": g, "sentence_bad": b, "UID": "agreement", "linguistics_term": "agreement",
                    "pair_id": n}) + "\n" for n, (g, b) in enumerate(pairs)))
    return root / "full_eval"


SMOKE = ("debug=cpu_smoke", "data=babylm", "tokenizer.vocab_size=320", "train.threads=1",
         "train.milestone_unit_words=120")


def test_corpus_to_submission(tmp_path, cache_dir):
    corpus, tasks = babylm_folder(tmp_path / "babylm"), pair_folder(tmp_path / "eval")
    run, out = tmp_path / "run", tmp_path / "submission"
    # the GPT-BERT recipe shrunk by debug=cpu_smoke (and 8 steps instead of its 10 epochs)
    done = main(["experiment=babylm_strict_small_gpt_bert", *SMOKE, "train.epochs=0", "train.grad_accum=1",
                 f"data.root={corpus}", f"data.cache_dir={cache_dir}",
                 f"run_dir={run}", f"train.eval_tasks={tasks}", f"tasks={tasks}", f"out={out}", "repo_id=me/tiny"])
    assert done["submission"] == str(out)
    # pretraining: milestones, and the fast set scored at each with GPT-BERT's scorer
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tracked = [r for r in rows if "eval_macro" in r]
    milestones = sorted(p.name for p in (run / "milestones").iterdir())
    assert milestones and all(r["eval_scorer"] == "mntp" for r in tracked) and (run / "eval_curve.png").exists()
    assert sorted(m for r in tracked if "eval_milestone" in r for m in r["eval_milestone"].split(",")) == milestones
    # the full evaluation: mntp, and the same score the last tracking row has (same weights, same items)
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["scorer"] == "mntp" and results["summary"]["blimp_filtered"] == pytest.approx(
        tracked[-1]["eval/blimp_filtered"], abs=1e-12)
    # the submission: final model, every milestone revision, predictions, a compliant report
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "predictions.json", "compliance.json", "README.md"} <= names
    assert set(milestones) <= names
    assert json.loads((out / "compliance.json").read_text())["compliant"]
    assert "me/tiny" in (out / "README.md").read_text()


def test_bad_input_stops_before_training(tmp_path):
    with pytest.raises(InputError, match="tasks="):
        run([*SMOKE, f"data.root={tmp_path}", f"run_dir={tmp_path / 'run'}", f"tasks={tmp_path / 'nowhere'}"])
    with pytest.raises(InputError, match="milestones"):
        run([*SMOKE, "train.milestones=false", f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
    assert split_args(["tasks=a", "out=b", "model=gpt"]) == ({"tasks": "a", "out": "b"}, ["model=gpt"])
    # from the command line: one error line, exit status 2
    r = run_cli("tinylm.babylm", *SMOKE, "model.nonsense=1", f"run_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
