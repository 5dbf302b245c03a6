"""BabyLM compliance of a run directory: what can be shown from the files the run wrote.

Checks (each `pass`, `fail` or `warn`; any `fail` makes the run non-compliant):

    words_seen_within_10x_budget  words seen (the final checkpoint's state.json) <= 10 x the budget;
                                  budget = data.budget_words (config.yaml) if set, else the train
                                  split's words (data_report.json)
    train_split_within_budget     the train split the run read has at most data.budget_words words, and
                                  the data report was built with the run's budget
    tokenizer_within_budget       the run's tokenizer.model is the one the data report's pipeline
                                  trained (sha256), and that tokenizer saw only the budgeted train split:
                                  shown by the report's `tokenizer_training` record (words, split,
                                  corpus key) when present, else by the pipeline format's contract
                                  (data-v2 trains the tokenizer on the budgeted train split only);
                                  anything else cannot be shown and fails
    milestones_present            every milestone below the final words seen (1M..10M, 20M..100M,
                                  200M..1B) has its RUN_DIR/milestones/chck_{N}M folder, written with
                                  the run's tokenizer
    milestone_unit (warn)         train.milestone_unit_words is not BabyLM's 1,000,000
    training_finished (warn)      the final checkpoint is not at train.steps
    data_changed (warn)           the run was resumed on other data with train.resume_data=changed
                                  (each change: step, data key / tokenizer sha256 before and after)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm.errors import InputError
from tinylm.train.checkpoint import newest_intact, read_state
from tinylm.train.milestones import UNIT_WORDS, existing_milestones, expected_milestones, milestone_name
from tinylm.utils import sha256_file

MAX_EPOCHS = 10  # BabyLM: at most 10 passes over the budget (words seen <= 10 x budget)
# data-report formats whose pipeline trains the tokenizer on the budgeted train split only
BUDGETED_TOKENIZER_FORMATS = {
    version: f"tinylm/data/pipeline.py ({version}) trains the tokenizer on the budgeted train split only"
    for version in ("data-v2", "data-v3")  # v3 only adds the exact word counts per token
}


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config: config.yaml, or the config.resumed_at_N.yaml of its latest resume."""
    from tinylm.config import load_stored_config

    resumed = sorted(run_dir.glob("config.resumed_at_*.yaml"), key=lambda p: int(p.stem.rsplit("_", 1)[-1] or 0))
    path = resumed[-1] if resumed else run_dir / "config.yaml"
    if not path.exists():
        raise InputError(f"{run_dir}: no config.yaml; pass a tinylm run directory (run=RUN_DIR)")
    return load_stored_config(path)


def load_run(run_dir: Path) -> tuple[dict, dict, Path, dict]:
    """(config, data report, final checkpoint folder, its state.json) of a run directory."""
    if not run_dir.is_dir():
        raise InputError(f"run={run_dir} is not a directory; pass a tinylm run directory")
    config = run_config(run_dir)
    report_path = run_dir / "data_report.json"
    if not report_path.exists():
        raise InputError(f"{run_dir}: no data_report.json; pass a tinylm run directory (run=RUN_DIR)")
    ckpt = newest_intact(run_dir)
    if ckpt is None:
        raise InputError(f"{run_dir}: no intact checkpoint under checkpoints/; train first (make pretrain)")
    if not (run_dir / "tokenizer.model").exists():
        raise InputError(f"{run_dir}: no tokenizer.model; is this a tinylm run directory?")
    return config, json.loads(report_path.read_text()), ckpt, read_state(ckpt)


def _check(name: str, ok: bool | None, detail: str, **values) -> dict[str, Any]:
    status = "warn" if ok is None else "pass" if ok else "fail"
    return {"name": name, "status": status, "detail": detail, **values}


def check_compliance(run_dir: str | Path) -> dict[str, Any]:
    """The compliance report of a run (see the module docstring); never raises for a failed check."""
    run_dir = Path(run_dir)
    config, report, ckpt, state = load_run(run_dir)
    data_cfg, train_cfg = config.get("data", {}), config.get("train", {})
    words_seen = int(state["words_seen"])
    words_train = int(report["words_train"])
    budget_cfg = int(data_cfg.get("budget_words") or 0)
    budget = budget_cfg or words_train
    budget_source = "data.budget_words" if budget_cfg else "train split words (data_report.json)"
    checks = []

    # 1. words seen
    ratio = words_seen / budget if budget else float("inf")
    checks.append(_check(
        "words_seen_within_10x_budget", budget > 0 and words_seen <= MAX_EPOCHS * budget,
        f"words seen {words_seen:,} {'exceed' if words_seen > MAX_EPOCHS * budget else 'within'} {MAX_EPOCHS} x the "
        f"budget of {budget:,} words ({budget_source}): {ratio:.2f} x",
        words_seen=words_seen, budget_words=budget, max_words=MAX_EPOCHS * budget))

    # 2. the train split against the budget
    built_with = (report.get("budget") or {}).get("budget_words")
    if not budget_cfg:
        checks.append(_check("train_split_within_budget", True,
                             f"no data.budget_words: the budget is the whole train split ({words_train:,} words)",
                             words_train=words_train))
    elif built_with is not None and int(built_with) != budget_cfg:
        checks.append(_check("train_split_within_budget", False,
                             f"the data report was built with data.budget_words={built_with}, the run's config says "
                             f"{budget_cfg}: the train split is not the run's budget", words_train=words_train))
    else:
        checks.append(_check("train_split_within_budget", words_train <= budget_cfg,
                             f"train split {words_train:,} words {'<=' if words_train <= budget_cfg else 'EXCEEDS'} "
                             f"data.budget_words={budget_cfg:,}", words_train=words_train))

    # 3. the tokenizer
    checks.append(_tokenizer_check(run_dir, report, budget, words_train))

    # 4. milestones
    unit = int(train_cfg.get("milestone_unit_words") or UNIT_WORDS)
    expected = expected_milestones(words_seen, unit)
    found = existing_milestones(run_dir)
    missing = [milestone_name(n) for n in expected if n not in found]
    tok_sha = sha256_file(run_dir / "tokenizer.model")
    foreign = []
    for n in expected:
        if n in found:
            ref = (read_state(found[n]).get("tokenizer") or {}).get("sha256")
            if ref not in (None, tok_sha):
                foreign.append(milestone_name(n))
    if missing:
        detail = (f"milestones missing: {', '.join(missing)} (words seen {words_seen:,}; every milestone below it must "
                  f"exist in {run_dir / 'milestones'}" + ("; train.milestones=false?" if train_cfg.get("milestones") is False else "") + ")")
    elif foreign:
        detail = f"milestones written with another tokenizer: {', '.join(foreign)}"
    else:
        detail = f"{len(expected)} milestone(s) present: " + (", ".join(milestone_name(n) for n in expected) or "none due yet")
    checks.append(_check("milestones_present", not missing and not foreign, detail,
                         expected=[milestone_name(n) for n in expected], missing=missing, unit_words=unit))

    # warnings
    if unit != UNIT_WORDS:
        checks.append(_check("milestone_unit", None, f"milestones are scaled: 1 M = {unit:,} words "
                                                    f"(train.milestone_unit_words), not BabyLM's {UNIT_WORDS:,}"))
    steps = train_cfg.get("steps")
    if steps is not None and state["step"] != steps:
        checks.append(_check("training_finished", None, f"the final checkpoint is at step {state['step']}, "
                                                        f"train.steps={steps}: the run did not finish"))

    changes = state.get("data_changes") or []
    if changes:  # train.resume_data=changed: continued pretraining on other data, deliberately
        checks.append(_check("data_changed", None, "the run continued on changed data (train.resume_data=changed): "
                             + "; ".join(f"at step {c['at_step']}: {', '.join(c['changed'])}" for c in changes),
                             data_changes=changes))

    failures = [c for c in checks if c["status"] == "fail"]
    return {
        "compliant": not failures, "run_dir": str(run_dir), "checkpoint": str(ckpt), "step": state["step"],
        "tokens_seen": state.get("tokens_seen"), "words_seen": words_seen, "budget_words": budget,
        "budget_source": budget_source, "words_train": words_train, "max_words_seen": MAX_EPOCHS * budget,
        "epochs": words_seen / words_train if words_train else None, "milestone_unit_words": unit,
        "checks": checks, "failures": [c["detail"] for c in failures],
    }


def _tokenizer_check(run_dir: Path, report: dict, budget: int, words_train: int) -> dict[str, Any]:
    name = "tokenizer_within_budget"
    actual = sha256_file(run_dir / "tokenizer.model")
    recorded = report.get("tokenizer_sha256")
    values = {"tokenizer_sha256": actual, "data_format": report.get("format")}
    if not recorded:
        return _check(name, False, f"the data report records no tokenizer hash (format {report.get('format', 'unknown')!r}): "
                                   "cannot show that the tokenizer saw only the budgeted train split; rebuild the data "
                                   "(make data) and retrain", **values)
    if recorded != actual:
        return _check(name, False, f"{run_dir / 'tokenizer.model'} (sha256 {actual[:12]}...) is not the tokenizer the data "
                                   f"report's pipeline trained (sha256 {recorded[:12]}...): what it was trained on is unknown",
                      **values)
    training = report.get("tokenizer_training")
    if isinstance(training, dict) and "words" in training:
        words = int(training["words"])
        problems = []
        if training.get("split", "train") != "train":
            problems.append(f"it was trained on the {training['split']!r} split")
        if training.get("corpus_key") not in (None, report.get("corpus_key")):
            problems.append("on another corpus (corpus key differs from the data report's)")
        if words > budget:
            problems.append(f"on {words:,} words, more than the budget of {budget:,}")
        if problems:
            return _check(name, False, "the tokenizer saw text outside the budget: " + "; ".join(problems),
                          tokenizer_words=words, **values)
        return _check(name, True, f"tokenizer (sha256 {actual[:12]}...) trained on {words:,} words of the budgeted train "
                                  "split (data report: tokenizer_training)", tokenizer_words=words, basis="tokenizer_training",
                      **values)
    basis = BUDGETED_TOKENIZER_FORMATS.get(report.get("format"))
    if basis is None:
        return _check(name, False, f"data format {report.get('format', 'unknown')!r} does not record what the tokenizer was "
                                   "trained on: cannot show it saw only the budgeted train split", **values)
    if words_train > budget:
        return _check(name, False, f"the tokenizer was trained on the train split ({words_train:,} words), which exceeds the "
                                   f"budget of {budget:,} words", tokenizer_words=words_train, basis=basis, **values)
    return _check(name, True, f"tokenizer (sha256 {actual[:12]}...) is the data report's, trained on at most the budgeted "
                              f"train split ({words_train:,} words); basis: {basis}", tokenizer_words=words_train,
                  basis=basis, **values)


def format_compliance(report: dict[str, Any]) -> str:
    lines = [f"BabyLM compliance of {report['run_dir']} (step {report['step']}, {report['words_seen']:,} words seen, "
             f"{report['epochs']:.2f} epochs over {report['words_train']:,} train words)" if report.get("epochs") is not None
             else f"BabyLM compliance of {report['run_dir']}"]
    for c in report["checks"]:
        lines.append(f"  {c['status'].upper():<4}  {c['name']:<30} {c['detail']}")
    lines.append("  => " + ("COMPLIANT" if report["compliant"] else "NOT COMPLIANT"))
    return "\n".join(lines)
