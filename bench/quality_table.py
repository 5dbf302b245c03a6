"""The quality table of runs made by bench/quality_run.sh: one row per run folder under
runs/quality/ (or the folders given), with the recipe's overrides, compute, dev loss and the scores
on ../shared/eval_dev (BLiMP fast, 24 paradigms) and Zorro. Written to bench/results/ with card,
date and the commands.

Runs named NAME_s<seed> are one recipe at several seeds: --by-recipe folds them into one row with the
mean and the spread (max - min) of each score. Dev loss is per token, so it compares runs of one
tokenizer only; bits per byte of the dev text compare across vocabularies.

    python bench/quality_table.py [RUN_DIR ...] [--by-recipe] [--note TEXT] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import statistics
from pathlib import Path

import report
import yaml

_HIDDEN = ("hydra.", "train.progress", "train.sample_every", "train.milestones", "data.root", "data=babylm",
           "train.eval_every", "train.ckpt_every", "train.seed")


def _first(summary: dict) -> float:
    return next(iter(summary.values()))


def scores(run: Path) -> dict:
    """The numbers of one finished run (None where a score is missing)."""
    summary = json.loads((run / "summary.json").read_text())
    dev = json.loads((run / "eval_dev" / "results.json").read_text())
    zorro_file = run / "eval_zorro" / "results.json"
    zorro = json.loads(zorro_file.read_text()) if zorro_file.exists() else None
    overrides = yaml.safe_load((run / "overrides.yaml").read_text()) if (run / "overrides.yaml").exists() else []
    beside = dev.get("causal_beside", {}).get("summary", {})
    return {
        "scorer": dev["scorer"], "blimp": _first(dev["summary"]), "causal": _first(beside) if beside else None,
        "zorro": _first(zorro["summary"]) if zorro else None,
        "zorro_items": (zorro.get("max_items") or "all") if zorro else None,
        "bpb": (dev.get("dev") or {}).get("bits_per_byte"), "dev_loss": summary["final_dev_loss"],
        "tokens": summary["tokens_seen"], "words": summary["words_seen"], "minutes": summary["train_seconds"] / 60,
        "overrides": " ".join(o for o in _last_of_each_key(overrides) if not o.startswith(_HIDDEN)),
    }


def _last_of_each_key(overrides: list[str]) -> list[str]:
    """The overrides as Hydra applies them: of a key given twice only the last value counts (kept in
    the later place)."""
    last = {o.split("=", 1)[0]: i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.split("=", 1)[0]] == i]


def _fmt(values: list, digits: int = 3) -> str:
    """One value, or the mean ± half the spread of several ("-" when missing)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ±{(max(values) - min(values)) / 2:.{digits}f}"


def table_rows(runs: list[Path], by_recipe: bool) -> list[tuple]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        name = re.sub(r"_s\d+$", "", run.name) if by_recipe else run.name
        groups.setdefault(name, []).append(scores(run))
    rows = []
    for name, runs_of in groups.items():
        col = lambda key: [r[key] for r in runs_of]  # noqa: E731
        zorro_items = {str(r["zorro_items"]) for r in runs_of if r["zorro_items"] is not None}
        rows.append((name, len(runs_of), runs_of[0]["scorer"], _fmt(col("blimp")), _fmt(col("causal")), _fmt(col("zorro")),
                     "/".join(sorted(zorro_items)) or "-", _fmt(col("bpb")), _fmt(col("dev_loss")),
                     f"{statistics.mean(col('tokens')) / 1e6:.2f}M", f"{statistics.mean(col('words')) / 1e6:.2f}M",
                     _fmt(col("minutes"), 1), runs_of[0]["overrides"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (default: every finished one under runs/quality/)")
    parser.add_argument("--by-recipe", action="store_true", help="fold NAME_s<seed> runs into one row (mean ±half spread)")
    parser.add_argument("--note", default="", help="a paragraph under the table (the machine's state, the budget)")
    parser.add_argument("--title", default="Model quality on eval_dev (BLiMP fast) and Zorro")
    parser.add_argument("--prefix", default="quality", help="results file name: PREFIX_cpu_DATE.md")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = [Path(r) for r in args.runs] or sorted(p for p in Path("runs/quality").iterdir() if (p / "eval_dev" / "results.json").exists())
    header = ("run", "seeds", "scorer", "BLiMP eval_dev", "causal beside", "Zorro", "Zorro items/paradigm", "dev bits/byte",
              "dev loss", "tokens", "words seen", "train min", "overrides")
    body = "\n".join([
        f"card: CPU ({platform.processor() or platform.machine()}, 2 cores), one torch thread per run", f"date: {dt.date.today().isoformat()}",
        "command: bench/quality_run.sh NAME OVERRIDES... (train on ../shared/corpora/babylm_like, score eval_dev and Zorro); "
        f"python bench/quality_table.py{' --by-recipe' if args.by_recipe else ''}", "",
        report.text_table(header, table_rows(runs, args.by_recipe)), "", args.note])
    print(body)
    report.save(args.prefix, "cpu", False, args.title, body, args.out)


if __name__ == "__main__":
    main()
