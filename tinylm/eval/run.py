"""`evaluate(cfg)`: load a trained run, score every task file, write the results.

Writes into `out` (default <run dir>/eval/):
    results.json      run info, objective, scorer (auto: from the objective, tinylm.train.positions) and
                      window, accuracy / pairs / ties per file, per UID and phenomenon, macro averages
                      per task, the causal scores beside a GPT-BERT's mntp ones, dev perplexity and bits
                      per byte (models that run causally), samples
    predictions.json  the chosen candidate per item, in the BabyLM 2025 collated layout
    accuracy.png      accuracy per UID and the macro per task
    phenomena.png     accuracy per phenomenon (BLiMP, Zorro, ...)
    samples.txt       generations from a few prompts (causal models)
"""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID
from tinylm.errors import InputError
from tinylm.export.outdir import check_out_folder
from tinylm.eval.config import SCORERS, EvalConfig
from tinylm.eval.formats import read_tasks
from tinylm.eval.perplexity import dev_perplexity, dev_shard_of
from tinylm.eval.report import aggregate, collate_predictions, format_table, plot_accuracies, plot_phenomena, summary
from tinylm.eval.scoring import causal_scores, encode_scored, judge, masked_scores, model_window
from tinylm.train.positions import BABYLM_BACKEND as BACKEND
from tinylm.train.positions import default_scorer, run_dir_of, run_objective, runs_causally
from tinylm.utils import write_atomic, write_json_atomic

DEFAULT_PROMPTS = ["Once upon a time", "The little dog", "Where is the ball?"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"device={name!r} is not a device; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return torch.device(name)


def can_run_causally(model) -> bool:
    """A masked model whose forward takes causal=True (a BERT body) can also be run causally."""
    return "causal" in inspect.signature(model.forward).parameters


def causal_forward_kwargs(model) -> dict:
    return {} if getattr(model, "causal", False) else {"causal": True}


def choose_scorer(requested: str, model, objective: str) -> str:
    """scorer=auto follows the objective the run trained with (tinylm.train.positions): causal after
    clm / distill, pll after mlm, mntp after hybrid. An explicit scorer must suit the model."""
    if requested not in SCORERS:
        raise InputError(f"scorer={requested!r} is not a scorer; use one of {', '.join(SCORERS)}")
    causal = bool(getattr(model, "causal", False))
    family = getattr(getattr(model, "cfg", None), "family", type(model).__name__)
    if requested == "auto":
        return "causal" if causal else default_scorer(objective)
    if requested == "causal" and not causal and not can_run_causally(model):
        raise InputError(f"scorer=causal needs a causal model; this checkpoint is a {family} (masked); use scorer=pll, pll_word or mntp")
    if requested != "causal" and causal:
        raise InputError(f"scorer={requested} needs a masked model; this checkpoint is a causal {family}; use scorer=causal")
    return requested


def stored_run_config(run_dir: Path) -> dict:
    """The run's config.yaml as plain data (interpolations unresolved); {} when it is gone."""
    from tinylm.config import load_stored_config

    config = run_dir / "config.yaml"
    return load_stored_config(config) if config.exists() else {}


def training_window(run_dir: Path, state: dict) -> int:
    """The longest window the run trained on: train.seq_len, or with a sequence-length curriculum the
    last stage the checkpoint's step (or words seen) reached; 0 when the run's config is gone."""
    from tinylm.config import CurriculumConfig
    from tinylm.data.curriculum import stage_lengths

    raw = stored_run_config(run_dir)
    seq_len = int((raw.get("train") or {}).get("seq_len") or 0)
    curriculum = raw.get("curriculum") or {}
    if not seq_len or curriculum.get("name", "none") == "none":
        return seq_len
    keys = ("seq_lens", "seq_len_fractions", "seq_len_by", "seq_len_boundaries")  # the schedule's keys only
    cur = CurriculumConfig(**{k: curriculum[k] for k in keys if k in curriculum})
    stages = stage_lengths(cur, seq_len)
    if len(stages) == 1:
        return seq_len
    if cur.seq_len_boundaries:
        boundaries = [int(b) for b in cur.seq_len_boundaries]
    else:  # by step, equal shares of train.steps (as CurriculumLoader)
        steps = max(1, int((raw.get("train") or {}).get("steps") or 1))
        boundaries = [round(steps * i / len(stages)) for i in range(1, len(stages))]
    step = int(state.get("step") or 0)
    at = max(step - 1, 0) if cur.seq_len_by == "step" else int((state.get("loader") or {}).get("step_words", 0))
    reached = sum(b <= at for b in boundaries)
    plateau = (state.get("loader") or {}).get("seq_len_trigger")  # seq_len_trigger=loss: the stage it switched to
    if plateau:  # (a switch at this very step has not been trained on yet: the stage before it)
        reached = max(reached, int(plateau["stage"]) - (1 if int(plateau["steps"]) == 0 else 0))
    return stages[reached]


def eval_window(cfg: EvalConfig, model, run_dir: Path, state: dict) -> tuple[int, str]:
    """(tokens per scoring / perplexity window, where that number came from)."""
    limit = model_window(model)
    if cfg.max_len > 0:
        return cfg.max_len, "max_len"
    trained = training_window(run_dir, state)
    if trained > 0:
        return min(trained, limit), "the run's training seq_len (longest stage reached)"
    return limit, "the model's max_seq_len (the run's config.yaml is absent)"


def score_texts(model, scorer: str, texts, cfg: EvalConfig, window: int, device, word_starts=None) -> list[float]:
    if scorer == "causal":
        return causal_scores(model, texts, BOS_ID, PAD_ID, cfg.batch_size, window, device,
                             forward_kwargs=causal_forward_kwargs(model))
    try:
        return masked_scores(model, texts, scorer, MASK_ID, PAD_ID, prefix=(BOS_ID,), suffix=(EOS_ID,),
                             word_starts=word_starts, batch_size=cfg.batch_size, max_len=window, device=device)
    except TypeError as e:
        if "key_padding_mask" in str(e):
            raise InputError(f"scorer={scorer}: the model's forward takes no key_padding_mask; "
                             "masked scorers need a masked model") from None
        raise


def score_files(model, tokenizer, scorer: str, files, cfg: EvalConfig, window: int, device):
    """({file: per-item candidate scores}, {file: per-item verdicts}) with one line printed per file."""
    if scorer == "pll_word" and getattr(tokenizer, "kind", "") == "bytes":
        raise InputError("scorer=pll_word masks the rest of a word by its pieces' word starts, which a byte "
                         "tokenizer (tokenizer=bytes) does not have; use scorer=pll or auto")
    word_starts = tokenizer.word_start_table() if scorer == "pll_word" else None
    scores: dict[str, list[list[float]]] = {}
    verdicts: dict[str, list] = {}
    for tf in files:
        t0 = time.perf_counter()
        texts, owner = [], []
        for n, item in enumerate(tf.items):
            for text in encode_scored(tokenizer, item.context, item.candidates):
                texts.append(text)
                owner.append(n)
        flat = score_texts(model, scorer, texts, cfg, window, device, word_starts)
        per_item: list[list[float]] = [[] for _ in tf.items]
        for n, s in zip(owner, flat):
            per_item[n].append(s)
        scores[tf.source] = per_item
        verdicts[tf.source] = [judge(s, item.correct, cfg.tie_credit) if item.correct is not None else None
                               for item, s in zip(tf.items, per_item)]
        done = [v for v in verdicts[tf.source] if v is not None]
        shown = f"accuracy {100 * sum(v.credit for v in done) / len(done):.1f}%" if done else "graded"
        print(f"  {tf.source}: {tf.task}, {len(tf.items)} items, {shown} ({time.perf_counter() - t0:.1f} s)")
    return scores, verdicts


@torch.no_grad()
def write_samples(model, tokenizer, prompts: list[str], n_tokens: int, seed: int, device, path: Path) -> list[dict[str, str]]:
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = torch.tensor([[BOS_ID, *tokenizer.encode([prompt])[0]]], device=device)
        ids = ids[:, -model_window(model):]
        gen = model.generate(ids, n_tokens, temperature=0.8, top_k=50, eos_id=EOS_ID, generator=generator)
        new = [i for i in gen[0, ids.shape[1] :].tolist() if i != EOS_ID]
        out.append({"prompt": prompt, "continuation": tokenizer.decode(new)})
    write_atomic(path, "".join(f"{s['prompt']} >>> {s['continuation']}\n" for s in out))
    return out


def trained_with_doc_mask(run_dir: Path) -> bool:
    """Whether the run trained with train.doc_mask (its dev perplexity is then scored the same way)."""
    return bool((stored_run_config(run_dir).get("train") or {}).get("doc_mask"))


def _run_prompts(run_dir: Path) -> list[str]:
    prompts = (stored_run_config(run_dir).get("train") or {}).get("sample_prompts")
    return [str(p) for p in prompts] if prompts else DEFAULT_PROMPTS


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt` on every file under `cfg.tasks`; returns what results.json holds."""
    from tinylm.train.checkpoint import load_trained

    started = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size < 1:
        raise InputError(f"batch_size={cfg.batch_size} must be at least 1")
    if not 0.0 <= cfg.tie_credit <= 1.0:
        raise InputError(f"tie_credit={cfg.tie_credit} must lie in [0, 1] (0.5 = half credit for a tie)")
    if cfg.out:
        check_out_folder(Path(cfg.out), "out")  # before any work: never a file or a run's own folders
    files, ignored = read_tasks(cfg.tasks, cfg.max_items)  # bad task files fail before any model work
    ckpt = Path(cfg.ckpt).expanduser()
    model, tokenizer, state = load_trained(ckpt, device)
    run_dir = run_dir_of(ckpt)
    objective = run_objective(run_dir, state.get("model_config", {}).get("family", "gpt"))
    scorer = choose_scorer(cfg.scorer, model, objective)
    # next-token log-probs mean something for this model (clm, distill, hybrid): dev perplexity, samples,
    # and the causal scores beside a masked scorer (GPT-BERT is reported both ways)
    causal = runs_causally(objective) and (bool(getattr(model, "causal", False)) or can_run_causally(model))
    window, window_source = eval_window(cfg, model, run_dir, state)
    out = Path(cfg.out).expanduser() if cfg.out else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    print(f"evaluating {ckpt} (step {state.get('step')}, objective {objective}) with scorer={scorer} on {len(files)} "
          f"file(s), window {window} tokens; device {device}")
    scores, verdicts = score_files(model, tokenizer, scorer, files, cfg, window, device)

    results: dict[str, Any] = {
        "checkpoint": str(ckpt), "run_dir": str(run_dir), "step": state.get("step"),
        "tokens_seen": state.get("tokens_seen"), "words_seen": state.get("words_seen"),
        "model": state.get("model_config", {}), "objective": objective, "scorer": scorer,
        "babylm_backend": BACKEND[scorer], "window": {"tokens": window, "source": window_source},
        "tie_credit": cfg.tie_credit, "tasks_dir": str(Path(cfg.tasks).expanduser()), "max_items": cfg.max_items,
        "ignored_files": ignored,
    }
    results |= aggregate(files, scores, verdicts)
    results["summary"] = summary(results["tasks"])
    if causal and scorer != "causal":
        print("the same files scored causally (the model also trained as a causal LM):")
        beside = aggregate(files, *score_files(model, tokenizer, "causal", files, cfg, window, device))
        results["causal_beside"] = {"scorer": "causal", "babylm_backend": BACKEND["causal"],
                                    "summary": summary(beside["tasks"]),
                                    "tasks": beside["tasks"]}

    if cfg.dev and causal:
        shard_dir, why = dev_shard_of(run_dir)
        results["dev"] = (dev_perplexity(model, tokenizer, shard_dir, window, cfg.batch_size,
                                         cfg.dev_max_bytes, device, causal_forward_kwargs(model),
                                         doc_mask=trained_with_doc_mask(run_dir))
                          if shard_dir else {"skipped": why})
    else:
        results["dev"] = {"skipped": "dev=false" if not cfg.dev else f"not a causal model (objective {objective})"}
    if cfg.samples and causal and hasattr(model, "generate"):
        results["samples"] = write_samples(model, tokenizer, _run_prompts(run_dir), cfg.sample_tokens, cfg.seed, device,
                                           out / "samples.txt")
    results["seconds"] = time.perf_counter() - started

    write_json_atomic(out / "results.json", _json_safe(results))
    write_atomic(out / "predictions.json", json.dumps(_json_safe(collate_predictions(files, scores, verdicts))) + "\n")
    plot_accuracies(results["tasks"], out / "accuracy.png", f"{run_dir.name} step {state.get('step')} ({scorer})")
    plot_phenomena(results["tasks"], out / "phenomena.png", f"{run_dir.name} step {state.get('step')} ({scorer})")
    print(format_table(results["tasks"]))
    dev = results["dev"]
    if "perplexity" in dev:
        print(f"dev: {dev['loss']:.4f} nats/token, perplexity {dev['perplexity']:.2f}, {dev['bits_per_byte']:.4f} bits/byte "
              f"({dev['tokens']:,} tokens)")
    else:
        print(f"dev perplexity skipped: {dev['skipped']}")
    print(f"summary ({scorer}): " + ", ".join(f"{task} {value:.3f}" for task, value in results["summary"].items()))
    if "causal_beside" in results:
        print("summary (causal): " + ", ".join(f"{task} {value:.3f}" for task, value in results["causal_beside"]["summary"].items()))
    print(f"results: {out / 'results.json'}")
    return results


def _json_safe(obj):
    """NaN -> None so results.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
