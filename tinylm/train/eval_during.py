"""Evaluation during training (`train.eval_tasks=FOLDER`): a minimal-pair folder scored at every
milestone and at the end of the run, so accuracy can be read against words seen.

The files are read and tokenized once, at launch (a bad folder fails before the run directory is
touched), with the loaders and scorers of tinylm.eval; `train.eval_tasks_max_items` keeps only the
first N items of each file so that tracking stays cheap. The scorer follows the objective as
`tinylm.eval scorer=auto` does (tinylm.train.positions.default_scorer: clm and distill -> causal, a
BERT trained with clm run with causal=True; mlm -> pll; hybrid -> mntp), in windows of train.seq_len. Scoring draws no random numbers and
puts the model back in training mode, so a resumed run stays bit-exact.

Each evaluation is one metrics.jsonl row: step, tokens_seen, words_seen, the milestone it belongs
to (`eval_milestone`, absent at the end of a run between milestones), `eval_scorer`,
`eval/<task>` (the task's macro accuracy, or Spearman's rho for wug) and `eval_macro` (the mean of
the accuracy tasks). `plot_eval_curve` draws them against words seen: RUN_DIR/eval_curve.png.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tinylm.errors import InputError

class TaskTracker:
    """Scores one minimal-pair folder with a training model; `row(...)` gives the metrics row."""

    def __init__(self, folder: str, max_items: int, objective: str, tokenizer, device: torch.device, window: int):
        from tinylm.eval.config import EvalConfig
        from tinylm.eval.formats import read_tasks
        from tinylm.eval.scoring import encode_scored

        if max_items < 0:
            raise InputError(f"train.eval_tasks_max_items={max_items} must be >= 0 (0: every item)")
        if not Path(folder).expanduser().exists():
            raise InputError(f"train.eval_tasks={folder} does not exist; give a folder of minimal-pair files "
                             "(e.g. ../shared/eval_dev) or drop train.eval_tasks")
        self.files, _ = read_tasks(folder, max_items)
        if not self.files:
            raise InputError(f"train.eval_tasks={folder} holds no evaluation files (.jsonl / .txt minimal pairs)")
        from tinylm.train.positions import default_scorer

        self.scorer = default_scorer(objective)
        self.tokenizer, self.device, self.window = tokenizer, device, window
        self.cfg = EvalConfig(ckpt="", tasks=folder)
        self.texts = {}  # per file: the scored texts of all candidates, and the item each belongs to
        for tf in self.files:
            texts, owner = [], []
            for n, item in enumerate(tf.items):
                for text in encode_scored(tokenizer, item.context, item.candidates):
                    texts.append(text)
                    owner.append(n)
            self.texts[tf.source] = (texts, owner)
        self.last_step: int | None = None

    @torch.no_grad()
    def score(self, model) -> dict[str, Any]:
        """results.json's `tasks` section (tinylm.eval.report.aggregate) for the model as it is now."""
        from tinylm.eval.report import aggregate
        from tinylm.eval.run import score_texts
        from tinylm.eval.scoring import judge, model_window

        was_training = model.training
        model.eval()
        scores, verdicts = {}, {}
        try:
            for tf in self.files:
                texts, owner = self.texts[tf.source]
                flat = score_texts(model, self.scorer, texts, self.cfg, min(self.window, model_window(model)), self.device)
                per_item: list[list[float]] = [[] for _ in tf.items]
                for n, s in zip(owner, flat):
                    per_item[n].append(s)
                scores[tf.source] = per_item
                verdicts[tf.source] = [judge(s, item.correct) if item.correct is not None else None
                                       for item, s in zip(tf.items, per_item)]
        finally:
            model.train(was_training)
        return aggregate(self.files, scores, verdicts)["tasks"]

    def row(self, model, step: int, tokens_seen: int, words_seen: int, milestone: str | None) -> dict[str, Any]:
        tasks = self.score(model)
        self.last_step = step
        row: dict[str, Any] = {"step": step, "tokens_seen": tokens_seen, "words_seen": words_seen,
                               "eval_scorer": self.scorer}
        if milestone:
            row["eval_milestone"] = milestone
        accuracies = []
        for task, entry in tasks.items():
            value = entry["macro"]
            row[f"eval/{task}"] = value if math.isfinite(value) else None
            if entry.get("metric") != "spearman" and math.isfinite(value):
                accuracies.append(value)
        row["eval_macro"] = sum(accuracies) / len(accuracies) if accuracies else None
        return row


def plot_eval_curve(run_dir: Path, rows: list[dict[str, Any]]) -> Path | None:
    """eval_curve.png: each task's accuracy and the macro average against words seen (log scale,
    as the milestones are spaced)."""
    rows = [r for r in rows if "eval_macro" in r and r.get("words_seen")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({k for r in rows for k in r if k.startswith("eval/")})
    fig, ax = plt.subplots(figsize=(7, 4))
    words = [r["words_seen"] for r in rows]
    for key in tasks:
        pts = [(w, r[key]) for w, r in zip(words, rows) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, linewidth=1, label=key.removeprefix("eval/"))
    macro = [(w, r["eval_macro"]) for w, r in zip(words, rows) if r["eval_macro"] is not None]
    if macro:
        ax.plot(*zip(*macro), marker="s", color="black", linewidth=2, label="macro (accuracy tasks)")
    if len(set(words)) > 1 and min(words) > 0:
        ax.set_xscale("log")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("words seen")
    ax.set_ylabel("accuracy (Spearman's rho for wug)")
    ax.set_title(f"{run_dir.name}: minimal pairs during training ({rows[-1]['eval_scorer']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = run_dir / "eval_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
