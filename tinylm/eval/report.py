"""Turning per-item verdicts into results: accuracies per file, paradigm (UID) and phenomenon, the
macro averages BabyLM reports, a printed table, a bar chart and a predictions file.

Plots: accuracy.png (per UID, i.e. paradigm, with each task's macro) and phenomena.png (per
phenomenon: the mean of its paradigms, as BLiMP groups them).

Macro averages, as in the BabyLM 2025 pipeline (evaluation_pipeline/sentence_zero_shot/run.py):
- BLiMP, BLiMP filtered, supplement, EWoK, Zorro: the mean of the per-UID accuracies (UID =
  paradigm for BLiMP/Zorro, file for the supplement, domain for EWoK). `by_phenomenon` is the mean
  over phenomena, each phenomenon being the mean of its paradigms.
- entity tracking: the mean over UIDs (`<split>_<numops>_ops`) within each split, then over splits.
- wug: Spearman's rho between the model's probability of the first sentence (softmax over the two
  sentence log-probs) and the human ratio.

The predictions file has the shape of the pipeline's collated file (collate_preds.py):
`{group: {UID: {"predictions": [{"id": "<UID>_<n>", "pred": "<chosen candidate>"}, ...]}}}` with
groups blimp (= BLiMP filtered), blimp_supplement, ewok, entity_tracking, wug_adj / wug_past (each
holding its file's UID, e.g. wug_adj -> wug_adj_nominalization, as the pipeline's own per-task files
do), and for the formats the pipeline does not have: blimp_original, zorro. It holds the zero-shot
tasks only: the reading task, AoA and the fine-tuning tasks come from the pipeline itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinylm.eval.formats import FORMAT_NAMES, TaskFile
from tinylm.eval.scoring import Verdict

COLLATE_GROUP = {"blimp_filtered": "blimp", "supplement": "blimp_supplement", "ewok": "ewok",
                 "entity_tracking": "entity_tracking", "blimp": "blimp_original", "zorro": "zorro"}


# The BabyLM 2025 pipeline's names for the wug files (collate_preds.py reads
# wug_adj/wug_adj_nominalization/predictions.json into "wug_adj", wug_past_tense into "wug_past").
WUG_GROUPS = {"wug_adj_nominalization": "wug_adj", "wug_past_tense": "wug_past"}


def wug_group(stem: str) -> str:
    """The collate group (and summary name) of a wug file: wug_adj, wug_past, or the stem itself."""
    return WUG_GROUPS.get(stem, stem)


def summary(tasks: dict[str, Any]) -> dict[str, float]:
    """One number per task as BabyLM reports it: the macro accuracy; for wug, Spearman's rho per
    file under the pipeline's names (wug_adj, wug_past)."""
    out = {}
    for task, entry in tasks.items():
        if task == "wug":
            out |= {wug_group(uid): cell["spearman"] for uid, cell in entry["uids"].items()}
        else:
            out[task] = entry["macro"]
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (ties get average ranks); nan when either side is constant."""
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = _mean(rx), _mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


def first_probability(scores: list[float]) -> float:
    """softmax(scores)[0] for two log-prob sums."""
    a, b = scores[0], scores[1]
    return 1.0 / (1.0 + math.exp(min(b - a, 700.0)))


def _cell(credits: list[float], outcomes: list[str]) -> dict[str, Any]:
    return {"items": len(credits), "accuracy": _mean(credits), "ties": outcomes.count("tie"),
            "nonfinite": outcomes.count("nonfinite")}


def aggregate(files: list[TaskFile], scores: dict[str, list[list[float]]], verdicts: dict[str, list[Verdict | None]]) -> dict[str, Any]:
    """results.json's `files` and `tasks` sections from per-item scores and verdicts (keyed by file)."""
    per_file: dict[str, Any] = {}
    # task -> uid -> (credits, outcomes); task -> uid -> phenomenon
    by_uid: dict[str, dict[str, tuple[list, list]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    uid_phenomenon: dict[str, dict[str, str]] = defaultdict(dict)
    wug: dict[str, dict[str, tuple[list, list]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for tf in files:
        entry: dict[str, Any] = {"task": tf.task, "format": FORMAT_NAMES[tf.task]}
        if tf.task == "wug":
            model, human, dropped = [], [], 0
            for item, s in zip(tf.items, scores[tf.source]):
                if all(math.isfinite(v) for v in s):
                    model.append(first_probability(s))
                    human.append(item.ratio)
                    wug[tf.task][item.uid][0].append(model[-1])
                    wug[tf.task][item.uid][1].append(item.ratio)
                else:
                    dropped += 1
            entry |= {"items": len(tf.items), "spearman": spearman(model, human), "nonfinite": dropped}
        else:
            credits = [v.credit for v in verdicts[tf.source]]
            outcomes = [v.outcome for v in verdicts[tf.source]]
            entry |= _cell(credits, outcomes)
            for item, v in zip(tf.items, verdicts[tf.source]):
                cell = by_uid[tf.task][item.uid]
                cell[0].append(v.credit)
                cell[1].append(v.outcome)
                uid_phenomenon[tf.task][item.uid] = item.phenomenon
        per_file[tf.source] = entry

    chance: dict[str, list[float]] = defaultdict(list)
    for tf in files:
        chance[tf.task].extend(1.0 / len(item.candidates) for item in tf.items)
    tasks: dict[str, Any] = {}
    for task, uids in sorted(by_uid.items()):
        uid_cells = {uid: _cell(*uids[uid]) | {"phenomenon": uid_phenomenon[task][uid]} for uid in sorted(uids)}
        phenomena: dict[str, list[str]] = defaultdict(list)
        for uid in uid_cells:
            phenomena[uid_phenomenon[task][uid]].append(uid)
        phenomenon_cells = {
            ph: {"uids": len(members), "items": sum(uid_cells[u]["items"] for u in members),
                 "accuracy": _mean(uid_cells[u]["accuracy"] for u in members),
                 "ties": sum(uid_cells[u]["ties"] for u in members)}
            for ph, members in sorted(phenomena.items())
        }
        entry = {"format": FORMAT_NAMES[task], "uids": uid_cells, "phenomena": phenomenon_cells,
                 "items": sum(c["items"] for c in uid_cells.values()),
                 "ties": sum(c["ties"] for c in uid_cells.values()),
                 "nonfinite": sum(c["nonfinite"] for c in uid_cells.values()), "chance": _mean(chance[task])}
        if task == "entity_tracking":
            splits: dict[str, list[float]] = defaultdict(list)
            for uid, c in uid_cells.items():
                splits[uid.rsplit("_", 2)[0]].append(c["accuracy"])
            entry["splits"] = {s: _mean(v) for s, v in sorted(splits.items())}
            entry["macro"] = _mean(entry["splits"].values())
            entry["macro_rule"] = "mean over splits of mean over their UIDs"
        else:
            entry["macro"] = _mean(c["accuracy"] for c in uid_cells.values())
            entry["macro_rule"] = "mean over UIDs"
            entry["by_phenomenon"] = _mean(c["accuracy"] for c in phenomenon_cells.values())
        tasks[task] = entry
    for task, uids in sorted(wug.items()):
        rhos = {uid: {"items": len(m), "spearman": spearman(m, h)} for uid, (m, h) in sorted(uids.items())}
        tasks[task] = {"format": FORMAT_NAMES[task], "uids": rhos, "macro": _mean(r["spearman"] for r in rhos.values()),
                       "macro_rule": "Spearman's rho with the human ratio, mean over files", "metric": "spearman"}
    return {"files": per_file, "tasks": tasks}


def collate_predictions(files: list[TaskFile], scores: dict[str, list[list[float]]],
                        verdicts: dict[str, list[Verdict | None]]) -> dict[str, Any]:
    out: dict[str, dict[str, dict[str, list]]] = defaultdict(dict)
    for tf in files:
        if tf.task == "wug":
            group = wug_group(Path(tf.source).stem)
        else:
            group = COLLATE_GROUP[tf.task]
        for n_item, item in enumerate(tf.items):
            preds = out[group].setdefault(item.uid, {"predictions": []})["predictions"]
            s = scores[tf.source][n_item]
            row: dict[str, Any] = {"id": f"{item.uid}_{len(preds)}"}
            if tf.task == "wug":
                finite = all(math.isfinite(v) for v in s)
                choice = max(range(len(s)), key=lambda i: s[i]) if finite else 0
                row |= {"pred": item.candidates[choice], "prob": first_probability(s) if finite else None}
            else:
                row["pred"] = item.candidates[verdicts[tf.source][n_item].predicted]
            preds.append(row)
    return dict(out)


def format_table(tasks: dict[str, Any]) -> str:
    """The per-phenomenon / per-UID table printed at the end of an evaluation."""
    lines = [f"{'task':<16} {'phenomenon':<28} {'uid':<44} {'items':>6} {'score':>7} {'ties':>5}"]
    lines.append("-" * len(lines[0]))
    for task, entry in tasks.items():
        if entry.get("metric") == "spearman":
            for uid, c in entry["uids"].items():
                lines.append(f"{task:<16} {'(spearman rho)':<28} {uid[:44]:<44} {c['items']:>6} {c['spearman']:>7.3f} {'':>5}")
            continue
        for ph, pc in entry["phenomena"].items():
            members = [(uid, c) for uid, c in entry["uids"].items() if c["phenomenon"] == ph]
            label = ph
            if len(members) > 1:
                lines.append(f"{task:<16} {ph[:28]:<28} {'(mean of ' + str(pc['uids']) + ' uids)':<44} {pc['items']:>6} "
                             f"{100 * pc['accuracy']:>6.1f}% {pc['ties']:>5}")
                label = ""
            for uid, c in members:
                lines.append(f"{task:<16} {label[:28]:<28} {uid[:44]:<44} {c['items']:>6} {100 * c['accuracy']:>6.1f}% {c['ties']:>5}")
        lines.append(f"{task:<16} {'MACRO':<28} {entry['macro_rule'][:44]:<44} {entry['items']:>6} "
                     f"{100 * entry['macro']:>6.1f}% {entry['ties']:>5}")
    return "\n".join(lines)


def plot_accuracies(tasks: dict[str, Any], path: Path, title: str) -> Path | None:
    """Horizontal bars: accuracy per UID, grouped by task, with each task's macro and chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float, str, bool, float]] = []  # label, accuracy, task, is_macro, chance
    for task, entry in tasks.items():
        if entry.get("metric") == "spearman":
            continue
        rows.append((f"{task} (macro)", entry["macro"], task, True, entry["chance"]))
        rows.extend((f"  {uid}", c["accuracy"], task, False, entry["chance"]) for uid, c in entry["uids"].items())
    if not rows:
        return None
    return _accuracy_bars(plt, list(tasks), rows, path, title, "accuracy (%)")


def _accuracy_bars(plt, tasks: list[str], rows: list[tuple], path: Path, title: str, xlabel: str) -> Path:
    """Horizontal accuracy bars, one colour per task, chance marked; rows are (label, accuracy,
    task, outlined, chance)."""
    colors = {task: plt.cm.tab10(i % 10) for i, task in enumerate(tasks)}
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * len(rows)))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [100 * r[1] for r in rows], color=[colors[r[2]] for r in rows],
            edgecolor=["black" if r[3] else "none" for r in rows])
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.scatter([100 * r[4] for r in rows], y, marker="|", s=120, color="black", zorder=3, label="chance")
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def phenomenon_rows(tasks: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(task, phenomenon, accuracy, chance) for every task that groups its UIDs into phenomena
    (BLiMP, BLiMP filtered, Zorro, ...): what phenomena.png draws."""
    return [(task, ph, cell["accuracy"], entry["chance"])
            for task, entry in tasks.items() if entry.get("metric") != "spearman"
            for ph, cell in entry.get("phenomena", {}).items()]


def plot_phenomena(tasks: dict[str, Any], path: Path, title: str) -> Path | None:
    """Horizontal bars: accuracy per phenomenon (the mean of its paradigms), one colour per task,
    with chance level; None when no task has phenomena."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = phenomenon_rows(tasks)
    if not rows:
        return None
    bars = [(f"{task}: {ph}", accuracy, task, False, chance) for task, ph, accuracy, chance in rows]
    return _accuracy_bars(plt, list(tasks), bars, path, title, "accuracy (%), mean over the phenomenon's paradigms")
