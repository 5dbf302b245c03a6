"""`build_package(cfg)`: a BabyLM 2025 submission folder from a tinylm run directory.

    OUT/
      config.json, model.safetensors, modeling_tinylm*.py, tokenizer*.json, ...
                          the final model (newest checkpoint) as an HF export: the repository's main
                          branch; loads with trust_remote_code=True (tinylm.export.hf)
      chck_1M/ ... chck_1000M/
                          every milestone the run has passed (RUN_DIR/milestones/), each an HF export
                          of its own: the revisions the BabyLM pipeline loads (revision="chck_10M")
      README.md           model card: data (words, sources, epochs), tokenizer, recipe, scores, milestones
      compliance.json     the BabyLM checks (tinylm.package.compliance), also printed
      predictions.json    the evaluation's predictions (BabyLM collate format), when RUN_DIR/eval has them
      eval_results.json   the evaluation's results.json, when present
      push_to_hub.py      pushes main + one branch per milestone (huggingface_hub); --dry-run prints the plan

A run that fails a compliance check gets no package: OUT then holds only compliance.json, and the
launch fails with one `error: ...` line (exit status 2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tinylm.errors import InputError
from tinylm.package.compliance import check_compliance, format_compliance, load_run
from tinylm.package.config import PackageConfig
from tinylm.train.positions import BABYLM_BACKEND, default_scorer
from tinylm.train.checkpoint import read_state
from tinylm.train.milestones import existing_milestones, expected_milestones, milestone_name
from tinylm.export.outdir import check_out_folder
from tinylm.utils import atomic_dir, write_json_atomic

PUSH_SCRIPT = Path(__file__).resolve().parent / "push_to_hub.py"
OTHER_FAMILY_KEYS = {"gpt": ("mlstm_", "bert_"), "bert": ("mlstm_",), "mlstm": ("bert_",)}  # left out of the card


def _quiet_progress_bars() -> None:
    """Exports save and reload many small models: no per-file progress bars."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def build_package(cfg: PackageConfig) -> Path:
    from tinylm.export.hf import DTYPES, export_hf
    from tinylm.train.positions import run_objective

    run_dir = Path(cfg.run).expanduser()
    if cfg.dtype not in DTYPES:
        raise InputError(f"dtype={cfg.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    out = Path(cfg.out).expanduser() if cfg.out else run_dir / "babylm_submission"
    check_out_folder(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise InputError(f"out={out} already exists and is not empty; pass overwrite=true or choose another folder")
    eval_dir = Path(cfg.eval_dir).expanduser() if cfg.eval_dir else run_dir / "eval"
    if cfg.eval_dir and not eval_dir.is_dir():
        raise InputError(f"eval_dir={eval_dir} is not a directory; run python -m tinylm.eval first or drop eval_dir")

    compliance = check_compliance(run_dir)  # raises InputError when run is not a run directory
    print(format_compliance(compliance))
    if not compliance["compliant"]:
        # A failed package never replaces a previous one: the report then goes beside it.
        report_path = out / "compliance.json"
        if out.is_dir() and any(out.iterdir()):
            report_path = out.with_name(f"{out.name}.compliance.json")
            write_json_atomic(report_path, compliance)
        else:
            with atomic_dir(out) as tmp:
                _write_json(tmp / "compliance.json", compliance)
                tmp.chmod(0o755)
        raise InputError(f"not BabyLM-compliant, no package built: {'; '.join(compliance['failures'])} "
                         f"(report: {report_path})")

    config, report, ckpt, state = load_run(run_dir)
    words_seen, unit = compliance["words_seen"], compliance["milestone_unit_words"]
    found = existing_milestones(run_dir)
    milestones = {n: found[n] for n in expected_milestones(words_seen, unit)}
    stray = sorted(set(found) - set(milestones))
    if stray:  # written by an abandoned trajectory (a resume from an earlier checkpoint)
        print(f"warning: milestones beyond the final words seen are left out: {', '.join(milestone_name(n) for n in stray)}")
    results = json.loads((eval_dir / "results.json").read_text()) if (eval_dir / "results.json").exists() else None
    predictions = eval_dir / "predictions.json"
    family = state["model_config"].get("family", "gpt")
    objective = run_objective(run_dir, family)

    _quiet_progress_bars()
    with atomic_dir(out) as tmp:
        print(f"exporting the final model ({ckpt.name}) ...")
        export_hf(ckpt, tmp, dtype=cfg.dtype, check=cfg.check)  # replaces the (empty) temporary folder
        rows = []
        for n, path in milestones.items():
            print(f"exporting {milestone_name(n)} ...")
            export_hf(path, tmp / milestone_name(n), dtype=cfg.dtype, check=cfg.check)
            m_state = read_state(path)
            rows.append({"revision": milestone_name(n), "step": m_state["step"], "words_seen": m_state["words_seen"]})
        if results is not None:
            _write_json(tmp / "eval_results.json", results)
        if predictions.exists():
            shutil.copyfile(predictions, tmp / "predictions.json")
        _write_json(tmp / "compliance.json", compliance)
        shutil.copyfile(PUSH_SCRIPT, tmp / "push_to_hub.py")
        (tmp / "README.md").write_text(model_card(cfg, run_dir, config, report, state, objective, compliance, rows,
                                                  results, predictions.exists(), _count_params(tmp / "model.safetensors")))
        for f in tmp.iterdir():
            if f.is_file():
                f.chmod(0o755 if f.name == "push_to_hub.py" else 0o644)
        tmp.chmod(0o755)
    print(f"BabyLM submission: {out} (final model + {len(rows)} milestone revision(s)"
          + (", predictions.json" if predictions.exists() else "") + ")")
    print(f"push it with: python {out / 'push_to_hub.py'} {cfg.repo_id or 'USER/NAME'}   (--dry-run to see the plan)")
    return out


def _count_params(weights: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def _yaml(obj: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(obj)).rstrip()


def model_card(cfg: PackageConfig, run_dir: Path, config: dict, report: dict, state: dict, objective: str,
               compliance: dict, milestones: list[dict], results: dict | None, has_predictions: bool,
               n_params: int) -> str:
    mc = state["model_config"]
    family = mc.get("family", "gpt")
    repo = cfg.repo_id or "USER/NAME"
    heads = {"gpt": "AutoModelForCausalLM", "mlstm": "AutoModelForCausalLM"}.get(family) or (
        "AutoModelForMaskedLM" if objective in ("mlm", "hybrid", "bootstrap") else "AutoModelForCausalLM")
    tok = config.get("tokenizer", {})
    words_seen, words_train = compliance["words_seen"], compliance["words_train"]
    lines = [
        "---", "library_name: transformers", "tags:", "- babylm", "- tinylm", f"- {family}", "---", "",
        f"# {repo.split('/')[-1] if cfg.repo_id else run_dir.name}", "",
        f"A {family} language model ({n_params / 1e6:.2f}M parameters, objective `{objective}`) pretrained from scratch "
        f"with tinylm on {words_train:,} words, BabyLM-style: {words_seen:,} words seen "
        f"({compliance['epochs']:.2f} epochs) in {state['step']:,} steps.", "",
        "## Loading", "", "```python",
        f"from transformers import AutoProcessor, {heads}", "",
        f'model = {heads}.from_pretrained("{repo}", trust_remote_code=True)  # the final model',
        f'tokenizer = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)',
        *([f'early = {heads}.from_pretrained("{repo}", revision="{milestones[0]["revision"]}", trust_remote_code=True)']
          if milestones else []),
        "```", "",
        "The modeling code (`modeling_tinylm*.py`) needs only torch and transformers. "
        + {"gpt": "AutoModel and AutoModelForCausalLM load it.",
           "mlstm": "AutoModel and AutoModelForCausalLM load it.",
           }.get(family, "AutoModel loads the encoder; " + (
               "AutoModelForMaskedLM runs it bidirectionally (masked tokens predicted at the position before them, MNTP) "
               "and AutoModelForCausalLM causally (GPT-BERT)." if objective == "hybrid" else
               "AutoModelForMaskedLM runs it bidirectionally." if objective in ("mlm", "bootstrap") else
               "AutoModelForCausalLM runs it causally.")), "",
        "## Training data", "",
        f"- train split: {words_train:,} words in {report.get('documents_train', '?'):,} documents"
        if isinstance(report.get("documents_train"), int) else f"- train split: {words_train:,} words",
        f"- budget: {compliance['budget_words']:,} words ({compliance['budget_source']})",
        f"- words seen: {words_seen:,} = {compliance['epochs']:.2f} epochs (words seen / train words); "
        f"{compliance['tokens_seen']:,} tokens" if compliance.get("tokens_seen") is not None else f"- words seen: {words_seen:,}",
        f"- source: {report.get('inputs', report.get('kind', '?'))}",
    ]
    per_source = report.get("words_per_source") or {}
    if per_source:
        lines += ["", "| source | train words | dev words |", "|---|---:|---:|"]
        lines += [f"| {name} | {w.get('train', 0):,} | {w.get('dev', 0):,} |" for name, w in per_source.items()]
    tok_check = next((c for c in compliance["checks"] if c["name"] == "tokenizer_within_budget"), {})
    tok_line = (
        f"sentencepiece {tok.get('model_type', '?')}, {report.get('vocab_size', tok.get('vocab_size', '?'))} pieces, "
        f"byte fallback {tok.get('byte_fallback', '?')}; trained on the budgeted train split only "
        f"(sha256 `{tok_check.get('tokenizer_sha256', '?')}`). `tokenizer.json` gives the same ids as sentencepiece; "
        f"the original model is `sentencepiece.model`." if tok.get("model_type") != "bytes" else
        "Byte-level (no trained tokenizer): the 7 special tokens at ids 0-6, UTF-8 byte b at id b + 7 (263 ids); "
        "`tokenizer.json` gives the same ids.")
    lines += [
        "", "## Tokenizer", "", tok_line, "",
        "## Recipe", "",
        f"Objective `{objective}`; {state['step']:,} optimizer steps of {config.get('train', {}).get('batch_size', '?')} x "
        f"{config.get('train', {}).get('grad_accum', 1)} sequences of {config.get('train', {}).get('seq_len', '?')} tokens.", "",
        "```yaml", _yaml({"model": {k: v for k, v in mc.items() if not k.startswith(OTHER_FAMILY_KEYS.get(family, ()))},
                          "objective": config.get("objective", {}), "optim": config.get("optim", {}),
                          "train": {k: v for k, v in config.get("train", {}).items()
                                    if k not in ("sample_prompts", "progress", "device", "threads")}}), "```", "",
    ]
    scorer = default_scorer(objective)
    backend = BABYLM_BACKEND[scorer]
    lines += ["## Evaluation", "",
              f"Trained with `{objective}`, so it is scored with `{scorer}` (tinylm.eval `scorer=auto`) and with the BabyLM "
              f"2025 pipeline's `--backend {backend}`"
              + (" (`--backend causal` also works: GPT-BERT runs causally)." if objective == "hybrid" else "."), ""]
    if results and results.get("scorer") != scorer:
        lines += [f"Warning: the packaged scores used scorer `{results.get('scorer')}`, not `{scorer}`: re-run "
                  "`python -m tinylm.eval` with `scorer=auto` for the scores this model is meant to be read with.", ""]
    if results:
        lines += [f"Zero-shot scores of step {results.get('step')} (scorer `{results.get('scorer')}`, BabyLM backend "
                  f"`{results.get('babylm_backend')}`)" + ("" if results.get("step") == state["step"] else
                                                         f" — not the final step {state['step']}") + ":", "",
                  "| task | score |", "|---|---:|"]
        lines += [f"| {task} | {value:.3f} |" if isinstance(value, (int, float)) else f"| {task} | n/a |"
                  for task, value in (results.get("summary") or {}).items()]
        dev = results.get("dev") or {}
        beside = (results.get("causal_beside") or {}).get("summary") or {}
        if beside:
            lines += ["", "Scored causally as well: " + ", ".join(
                f"{task} {value:.3f}" if isinstance(value, (int, float)) else f"{task} n/a" for task, value in beside.items()) + "."]
        if "perplexity" in dev:
            lines += ["", f"Dev perplexity {dev['perplexity']:.2f} ({dev.get('bits_per_byte', float('nan')):.4f} bits per byte)."]
        if has_predictions:
            lines += ["", "`predictions.json` holds the zero-shot predictions (BLiMP, supplement, EWoK, entity tracking, "
                      "wug; the scorer above) in the BabyLM 2025 collate format; reading, AoA and the fine-tuning "
                      "tasks are not part of it."]
    else:
        lines += ["No evaluation results were packaged (run `python -m tinylm.eval ckpt=RUN_DIR tasks=...` first)."]
    lines += ["", "## Milestones", "",
              f"One revision (branch) per milestone, 1 M = {compliance['milestone_unit_words']:,} words seen:", ""]
    if milestones:
        lines += ["| revision | step | words seen |", "|---|---:|---:|"]
        lines += [f"| {m['revision']} | {m['step']:,} | {m['words_seen']:,} |" for m in milestones]
    else:
        lines += ["None yet (fewer words seen than the first milestone)."]
    lines += ["", "## Compliance", "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {c['status']} | {c['detail'].replace('|', '/')} |" for c in compliance["checks"]]
    return "\n".join(lines) + "\n"
