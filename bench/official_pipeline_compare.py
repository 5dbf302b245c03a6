"""Per-item comparison of the official BabyLM 2025 zero-shot pipeline with `tinylm.eval`.

Three modes (bench/official_pipeline_check.sh runs them in order):

  pipeline  run the pipeline's own `evaluation_pipeline.sentence_zero_shot.run` (from PIPELINE_DIR, in the
            pipeline's environment, unmodified) and also record the summed log-probability of every
            candidate it ranks: `compute_results.rank_and_evaluate` is wrapped at run time (the wrapper
            passes its arguments through untouched); nothing of the pipeline is copied here.
                python official_pipeline_compare.py pipeline PIPELINE_DIR OUT.json -- <run.py arguments>
  tinylm    `tinylm.eval.run.evaluate` on the run directory with the same scorer, recording the per-item
            candidate scores it judges (`score_files` wrapped the same way).
                python official_pipeline_compare.py tinylm OUT.json -- <tinylm.eval key=value arguments>
  compare   accuracy per paradigm and overall from both, items whose verdict differs, ties on each side
            (the pipeline's argmax credits a tie to the first candidate, the good sentence; tinylm does
            not by default), and the largest |log-prob difference| per candidate.
                python official_pipeline_compare.py compare PIPELINE.json TINYLM.json [--md]

This file imports only the standard library at the top so the `pipeline` mode runs in the pipeline's
own virtual environment (which has no tinylm).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def run_pipeline(pipeline_dir: str, out: str, run_args: list[str]) -> None:
    sys.path.insert(0, str(Path(pipeline_dir).resolve()))
    from evaluation_pipeline.sentence_zero_shot import compute_results, run  # the pipeline, as shipped

    records: list[dict] = []
    original = compute_results.rank_and_evaluate

    def recording(args, subset_to_stats, all_log_probs, raw_sentences, labels, metadatas, uids, predictions):
        temps = list(subset_to_stats)
        stacked = [list(zip(*[t.tolist() for t in all_log_probs[temp]])) for temp in temps]
        for n, (uid, label, raw) in enumerate(zip(uids, labels, raw_sentences)):
            records.append({"uid": uid, "label": label, "sentences": raw["sentences"],
                            "scores": {str(temp): list(stacked[k][n]) for k, temp in enumerate(temps)}})
        return original(args, subset_to_stats, all_log_probs, raw_sentences, labels, metadatas, uids, predictions)

    compute_results.rank_and_evaluate = recording
    sys.argv = ["evaluation_pipeline.sentence_zero_shot.run", *run_args]
    run.main()
    import transformers
    import torch

    Path(out).write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                                     "argv": run_args, "items": records}) + "\n")
    print(f"pipeline: {len(records)} items recorded -> {out}")


def run_tinylm(out: str, eval_args: list[str]) -> None:
    from omegaconf import OmegaConf

    import tinylm.eval.run as ev
    from tinylm.eval.config import EvalConfig

    captured: dict = {}
    original = ev.score_files

    def recording(model, tokenizer, scorer, files, cfg, window, device):
        scores, verdicts = original(model, tokenizer, scorer, files, cfg, window, device)
        if "scorer" not in captured:  # the first call is the main scorer (a causal one may follow)
            captured["scorer"] = scorer
            captured["items"] = [
                {"uid": item.uid or Path(tf.source).stem, "sentences": list(item.candidates),
                 "correct": item.correct, "scores": s, "outcome": v.outcome if v else None}
                for tf in files for item, s, v in zip(tf.items, scores[tf.source], verdicts[tf.source])]
        return scores, verdicts

    ev.score_files = recording
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.from_dotlist(eval_args))
    results = ev.evaluate(cfg)
    Path(out).write_text(json.dumps({"scorer": captured["scorer"], "summary": results["summary"],
                                     "items": captured["items"]}) + "\n")
    print(f"tinylm: {len(captured['items'])} items recorded -> {out}")


def compare(pipeline_json: str, tinylm_json: str, markdown: bool = False) -> dict:
    pipe = json.loads(Path(pipeline_json).read_text())
    tiny = json.loads(Path(tinylm_json).read_text())
    # key both sides by (paradigm, candidate texts): robust to file order
    p_items = {(r["uid"], tuple(r["sentences"])): r for r in pipe["items"]}
    t_items = {(r["uid"], tuple(r["sentences"])): r for r in tiny["items"]}
    missing = sorted(set(p_items) ^ set(t_items))
    per: dict[str, dict] = {}
    max_delta, worst = 0.0, None
    for key in sorted(set(p_items) & set(t_items)):
        p, t = p_items[key], t_items[key]
        ps = p["scores"]["1.0"]
        ts = t["scores"]
        label = p["label"]  # 0: the good sentence first, as tinylm's correct index
        assert t["correct"] == label, key
        p_choice = max(range(len(ps)), key=lambda i: ps[i])  # torch.max: the first of equal maxima
        p_ok = p_choice == label
        t_ok = t["outcome"] == "correct"
        row = per.setdefault(key[0], {"n": 0, "pipe": 0, "tiny": 0, "differ": 0, "pipe_ties": 0, "tiny_ties": 0})
        row["n"] += 1
        row["pipe"] += p_ok
        row["tiny"] += t_ok
        row["differ"] += p_ok != t_ok
        row["pipe_ties"] += len(set(ps)) < len(ps)
        row["tiny_ties"] += t["outcome"] == "tie"
        for a, b in zip(ps, ts):
            if abs(a - b) > max_delta:
                max_delta, worst = abs(a - b), (key[0], key[1], a, b)
    total = {k: sum(r[k] for r in per.values()) for k in ("n", "pipe", "tiny", "differ", "pipe_ties", "tiny_ties")}
    macro_p = sum(r["pipe"] / r["n"] for r in per.values()) / len(per)
    macro_t = sum(r["tiny"] / r["n"] for r in per.values()) / len(per)
    out = {"paradigms": per, "total": total, "macro_pipeline": macro_p, "macro_tinylm": macro_t,
           "max_abs_logprob_diff": max_delta, "worst": worst, "unmatched_items": len(missing),
           "transformers": pipe.get("transformers"), "tinylm_scorer": tiny.get("scorer")}
    if markdown:
        print("| paradigm | n | official | tinylm | differing verdicts | ties (official / tinylm) |")
        print("|---|---:|---:|---:|---:|---:|")
        for uid, r in per.items():
            print(f"| {uid} | {r['n']} | {100 * r['pipe'] / r['n']:.2f} | {100 * r['tiny'] / r['n']:.2f} | {r['differ']} | "
                  f"{r['pipe_ties']} / {r['tiny_ties']} |")
        print(f"| **macro** | {total['n']} | **{100 * macro_p:.2f}** | **{100 * macro_t:.2f}** | {total['differ']} | "
              f"{total['pipe_ties']} / {total['tiny_ties']} |")
        print(f"\nmax |delta log-prob| per candidate: {max_delta:.3g}; unmatched items: {len(missing)}")
    else:
        print(json.dumps({k: v for k, v in out.items() if k != "paradigms"}, indent=1))
    return out


def main(argv: list[str]) -> None:
    head, rest = _split_args(argv)
    if not head:
        raise SystemExit(__doc__)
    if head[0] == "pipeline":
        run_pipeline(head[1], head[2], rest)
    elif head[0] == "tinylm":
        run_tinylm(head[1], rest)
    elif head[0] == "compare":
        compare(head[1], head[2], markdown="--md" in head)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
