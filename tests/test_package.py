"""BabyLM packaging: the submission folder (final model + one HF export per milestone, model card,
compliance report, predictions, push script), loading it offline as the BabyLM 2025 pipeline does,
the push script's plan and offline path, and every compliance failure."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import run_cli, smoke_config

from tinylm.errors import InputError
from tinylm.package.compliance import check_compliance
from tinylm.package.config import PackageConfig

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoProcessor  # noqa: E402

UNIT = 100  # words per "M": ~50 words per step, so 8 steps pass chck_1M .. chck_4M


def _train(run, cache_dir, *overrides):
    from tinylm.train.loop import pretrain

    torch.set_num_threads(1)
    return pretrain(smoke_config(run, cache_dir, "train.threads=1", f"train.milestone_unit_words={UNIT}",
                                 "train.log_every=4", *overrides))


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("package") / "run"
    _train(run, cache_dir)
    # what python -m tinylm.eval leaves (stand-ins: the evaluation itself is tested in test_eval.py)
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps({
        "step": 8, "scorer": "causal", "babylm_backend": "causal", "summary": {"blimp_filtered": 0.625, "ewok": 0.5},
        "dev": {"perplexity": 123.4, "bits_per_byte": 2.5}}))
    (run / "eval" / "predictions.json").write_text(json.dumps(
        {"blimp": {"anaphor_gender_agreement": {"predictions": [{"id": "anaphor_gender_agreement_0", "pred": "x"}]}}}))
    return run


@pytest.fixture(scope="module")
def package(gpt_run, tmp_path_factory):
    from tinylm.package.build import build_package

    out = tmp_path_factory.mktemp("submission") / "sub"
    return build_package(PackageConfig(run=str(gpt_run), out=str(out), repo_id="me/tiny-babylm"))


def test_submission_folder_layout_card_and_compliance(package, gpt_run):
    names = {p.name for p in package.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_tinylm.py", "tokenizer.json", "README.md", "compliance.json",
            "predictions.json", "eval_results.json", "push_to_hub.py"} <= names
    assert sorted(n for n in names if n.startswith("chck_")) == ["chck_1M", "chck_2M", "chck_3M", "chck_4M"]
    for n in range(1, 5):  # every revision is a complete HF export of its milestone
        report = json.loads((package / f"chck_{n}M" / "tinylm_export.json").read_text())
        assert report["milestone"] == f"chck_{n}M" and report["checks"]["max_abs_logit_diff"] < 1e-4
        assert report["words_seen"] >= n * UNIT
        assert report["scorer"] == "causal" and report["babylm_backend"] == "causal"
    compliance = json.loads((package / "compliance.json").read_text())
    assert compliance["compliant"] and compliance["failures"] == []
    assert {c["name"]: c["status"] for c in compliance["checks"]} == {
        "words_seen_within_10x_budget": "pass", "train_split_within_budget": "pass", "tokenizer_within_budget": "pass",
        "milestones_present": "pass", "milestone_unit": "warn"}
    assert json.loads((package / "predictions.json").read_text()) == json.loads((gpt_run / "eval" / "predictions.json").read_text())
    card = (package / "README.md").read_text()
    report = json.loads((gpt_run / "data_report.json").read_text())
    words_seen = compliance["words_seen"]
    for needle in ("library_name: transformers", "me/tiny-babylm", f"{report['words_train']:,} words",
                   f"{words_seen:,} words seen", f"{words_seen / report['words_train']:.2f} epochs", "| default |",
                   "sentencepiece bpe, 512 pieces", report["tokenizer_sha256"], "family: gpt", "name: adamw",
                   "| blimp_filtered | 0.625 |", "perplexity 123.40", 'revision="chck_1M"', "| chck_4M |", "tokenizer_within_budget"):
        assert needle in card, needle
    assert "bert_norm" not in card  # only the family's own model keys


def test_package_loads_offline_like_the_babylm_pipeline(package, gpt_run):
    from tinylm.train.checkpoint import load_trained

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py: nothing may reach the Hub
    tok = AutoProcessor.from_pretrained(str(package / "chck_2M"), trust_remote_code=True)
    ids = tok(["The little dog ran home.", "Where is the ball?"], return_tensors="pt", padding=True)
    logits = {}
    for revision in ("chck_2M", None):
        path = package / revision if revision else package
        model = AutoModelForCausalLM.from_pretrained(str(path), revision=revision, trust_remote_code=True).eval()
        native, _, state = load_trained(gpt_run / "milestones" / revision if revision else gpt_run)
        with torch.no_grad():
            logits[revision] = model(**ids).logits
            want = native(ids["input_ids"][:1])
        torch.testing.assert_close(logits[revision][:1], want, atol=1e-4, rtol=0)
    assert (logits["chck_2M"] - logits[None]).abs().max() > 1e-3  # a milestone is not the final model


@pytest.fixture(scope="module")
def hybrid_package(tmp_path_factory, cache_dir):
    from tinylm.package.build import build_package

    run = tmp_path_factory.mktemp("package-hybrid") / "run"
    _train(run, cache_dir, "model=bert_tiny", "objective=hybrid", "train.steps=4")
    return build_package(PackageConfig(run=str(run), out=str(run / "sub"), check=False)), run


def test_gpt_bert_package_loads_as_masked_and_causal_lm(hybrid_package):
    from tinylm.train.checkpoint import load_trained

    package, run = hybrid_package
    assert sorted(p.name for p in package.glob("chck_*")) == ["chck_1M", "chck_2M"]
    path = str(package / "chck_1M")
    tok = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    ids = tok("The little dog ran home.", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == 2 and ids[0, -1] == 3  # <s> ... </s> for a masked model
    native, _, _ = load_trained(run / "milestones" / "chck_1M")
    masked = AutoModelForMaskedLM.from_pretrained(path, revision="chck_1M", trust_remote_code=True).eval()
    causal = AutoModelForCausalLM.from_pretrained(path, revision="chck_1M", trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(input_ids=ids).logits, native(ids), atol=1e-4, rtol=0)
        torch.testing.assert_close(causal(input_ids=ids).logits, native(ids, causal=True), atol=1e-4, rtol=0)
    card = (package / "README.md").read_text()
    assert "AutoModelForMaskedLM" in card and "scored with `mntp`" in card and "`--backend mntp`" in card
    for folder in (package, package / "chck_1M"):  # the export's metadata says how to score it
        report = json.loads((folder / "tinylm_export.json").read_text())
        assert report["objective"] == "hybrid" and report["scorer"] == "mntp" and report["babylm_backend"] == "mntp"


def _push(package, *args, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(package / "push_to_hub.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_push_script_plan_offline_and_missing_token(package, tmp_path):
    dry = _push(package, "me/tiny-babylm", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    steps = [line.split(". ", 1)[1] for line in dry.stdout.splitlines() if line[:1].isdigit()]
    assert steps[0].startswith("create_repo(repo_id='me/tiny-babylm'")
    for i, n in enumerate(range(1, 5)):  # each milestone: a branch, then exactly its files on it
        assert steps[1 + 2 * i].startswith(f"create_branch(repo_id='me/tiny-babylm', branch='chck_{n}M'")
        assert steps[2 + 2 * i].startswith("upload_folder(") and f"revision='chck_{n}M'" in steps[2 + 2 * i]
        assert f"/chck_{n}M'" in steps[2 + 2 * i] and "delete_patterns=['*']" in steps[2 + 2 * i]
    assert "revision='main'" in steps[-1] and "chck_*" in steps[-1] and len(steps) == 10
    offline = _push(package, "me/tiny-babylm", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 3 and "offline" in offline.stderr and len(offline.stderr.strip().splitlines()) == 1
    no_token = _push(package, "me/tiny-babylm", env={"HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HOME": str(tmp_path)})
    assert no_token.returncode == 3 and "no Hugging Face token" in no_token.stderr
    bad = tmp_path / "bad"
    shutil.copytree(package, bad, ignore=shutil.ignore_patterns("chck_*", "*.safetensors"))
    (bad / "compliance.json").write_text(json.dumps({"compliant": False}))
    refused = _push(bad, "me/tiny-babylm", "--dry-run")
    assert refused.returncode == 2 and "not BabyLM-compliant" in refused.stderr


# --------------------------------------------------------------------------------------------------
# compliance failures: a copy of the run, one thing broken at a time


def _broken_copy(gpt_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(gpt_run, run, ignore=shutil.ignore_patterns("eval"))
    return run


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _failed(run):
    report = check_compliance(run)
    assert not report["compliant"]
    return {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}


def test_words_seen_beyond_ten_times_the_budget_fails(gpt_run, tmp_path):
    run = _broken_copy(gpt_run, tmp_path)
    # budget = the train split: 407 words seen > 10 x 30 (the tokenizer record shrinks with it)
    _edit_json(run / "data_report.json", words_train=30, tokenizer_training={"split": "train", "words": 30})
    failed = _failed(run)
    assert list(failed) == ["words_seen_within_10x_budget"] and "exceed 10 x the budget of 30 words" in failed[
        "words_seen_within_10x_budget"]
    # data.budget_words is the budget when set (and the data must have been built with it)
    run2 = _broken_copy(gpt_run, tmp_path / "b")
    (run2 / "config.yaml").write_text((run2 / "config.yaml").read_text().replace("budget_words: 0", "budget_words: 40"))
    failed = _failed(run2)
    assert "budget of 40 words (data.budget_words)" in failed["words_seen_within_10x_budget"]
    assert "built with data.budget_words=0" in failed["train_split_within_budget"]


def test_tokenizer_outside_the_budget_or_unprovable_fails(gpt_run, tmp_path):
    run = _broken_copy(gpt_run, tmp_path)
    report = run / "data_report.json"
    _edit_json(report, tokenizer_sha256="0" * 64)  # the run's tokenizer is not the data's
    assert "is not the tokenizer the data report's pipeline trained" in _failed(run)["tokenizer_within_budget"]
    _edit_json(report, tokenizer_sha256=json.loads((gpt_run / "data_report.json").read_text())["tokenizer_sha256"],
               tokenizer_training={"split": "train", "words": 10**9})
    assert "saw text outside the budget" in _failed(run)["tokenizer_within_budget"]
    _edit_json(report, tokenizer_training=None, format="data-v1")
    assert "does not record what the tokenizer was trained on" in _failed(run)["tokenizer_within_budget"]
    _edit_json(report, tokenizer_sha256=None)
    assert "records no tokenizer hash" in _failed(run)["tokenizer_within_budget"]


def test_missing_milestone_fails_loudly_from_the_command_line(gpt_run, tmp_path):
    run = _broken_copy(gpt_run, tmp_path)
    shutil.rmtree(run / "milestones" / "chck_2M")
    assert list(_failed(run)) == ["milestones_present"]
    out = tmp_path / "sub"
    result = run_cli("tinylm.package", f"run={run}", f"out={out}")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: not BabyLM-compliant") and "chck_2M" in errors[0]
    assert "FAIL  milestones_present" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["compliance.json"]  # no package, only the report
    assert json.loads((out / "compliance.json").read_text())["compliant"] is False


def test_bad_inputs(gpt_run, package, tmp_path):
    from tinylm.package.build import build_package

    with pytest.raises(InputError, match="no config.yaml"):
        check_compliance(tmp_path)
    with pytest.raises(InputError, match="already exists and is not empty"):
        build_package(PackageConfig(run=str(gpt_run), out=str(package)))
