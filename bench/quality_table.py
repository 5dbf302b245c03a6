"""The quality table of runs made by bench/quality_run.sh: one row per run folder under
runs/quality/ (or the folders given), with the recipe's overrides, compute, dev loss and the scores
on ../shared/eval_dev (BLiMP fast, 24 paradigms) and Zorro. Written to bench/results/ with card,
date and the commands.

    python bench/quality_table.py [RUN_DIR ...] [--note TEXT] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import report
import yaml


def row(run: Path) -> tuple:
    summary = json.loads((run / "summary.json").read_text())
    dev = json.loads((run / "eval_dev" / "results.json").read_text())
    zorro_file = run / "eval_zorro" / "results.json"
    zorro = f"{next(iter(json.loads(zorro_file.read_text())['summary'].values())):.3f}" if zorro_file.exists() else "-"
    overrides = yaml.safe_load((run / "overrides.yaml").read_text()) if (run / "overrides.yaml").exists() else []
    blimp = next(iter(dev["summary"].values()))
    beside = dev.get("causal_beside", {}).get("summary", {})
    causal = f"{next(iter(beside.values())):.3f}" if beside else "-"
    return (run.name, dev["scorer"], f"{blimp:.3f}", causal, zorro,
            f"{summary['final_dev_loss']:.3f}", f"{summary['tokens_seen'] / 1e6:.2f}M", f"{summary['words_seen'] / 1e6:.2f}M",
            f"{summary['train_seconds'] / 60:.1f}", " ".join(o for o in overrides if not o.startswith(("hydra.", "train.progress",
                                                                                                    "train.sample_every", "train.milestones", "data.root", "data=babylm"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (default: every finished one under runs/quality/)")
    parser.add_argument("--note", default="", help="a paragraph under the table (the machine's state, the budget)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = [Path(r) for r in args.runs] or sorted(p for p in Path("runs/quality").iterdir() if (p / "eval_dev" / "results.json").exists())
    header = ("run", "scorer", "BLiMP eval_dev", "causal beside", "Zorro", "dev loss", "tokens", "words seen", "train min", "overrides")
    body = "\n".join([
        f"card: CPU ({platform.processor() or platform.machine()}, 2 cores), one torch thread per run", f"date: {dt.date.today().isoformat()}",
        "command: bench/quality_run.sh NAME OVERRIDES... (train on ../shared/corpora/babylm_like, score eval_dev and Zorro); "
        "python bench/quality_table.py", "", report.text_table(header, [row(r) for r in runs]), "", args.note])
    print(body)
    report.save("quality", "cpu", False, "Model quality on eval_dev (BLiMP fast) and Zorro", body, args.out)


if __name__ == "__main__":
    main()
