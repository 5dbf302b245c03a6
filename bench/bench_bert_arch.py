"""Dev MLM loss of the faithful LTG/ELC-BERT against the earlier simplified sketch, at equal steps.

    python bench/bench_bert_arch.py                              # bert_tiny, default corpus, 300 steps
    python bench/bench_bert_arch.py --steps 600 --extra model.dropout=0.1

Each variant is one `python -m tinylm.pretrain model=bert_tiny objective=mlm` run (same seed, data,
steps, batch and schedule; train.threads=1), all started together so that they share the machine's
conditions; the dev loss is the masked loss at the objective's fixed dev seed. The table (dev loss,
its ratio to the simple sketch's, train seconds) goes to stdout and bench/results/bert_arch_<card>_<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from report import save, text_table

VARIANTS = {  # name -> overrides
    "elc (default)": ("model.bert_arch=ltg", "model.bert_elc=true"),
    "ltg (no ELC)": ("model.bert_arch=ltg", "model.bert_elc=false"),
    "simple (sketch)": ("model.bert_arch=simple", "model.bert_elc=true"),
    "simple (no ELC)": ("model.bert_arch=simple", "model.bert_elc=false"),
}
BASELINE = "simple (sketch)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--variants", default=",".join(list(VARIANTS)[:3]), help="comma-separated names from: " + ", ".join(VARIANTS))
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--out", default=None, help="results file (default: bench/results/bert_arch_<card>_<date>.md)")
    args = p.parse_args()
    names = args.variants.split(",")
    common = ["model=bert_tiny", "objective=mlm", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
              f"train.seq_len={args.seq_len}", "train.threads=1", f"train.eval_every={args.steps}", "train.eval_batches=40",
              f"train.ckpt_every={args.steps}", "train.sample_every=0", "train.progress=false", "train.milestones=false",
              "train.device=cpu", *args.extra]
    with tempfile.TemporaryDirectory() as tmp:
        # the corpus and tokenizer once, so the runs start together
        subprocess.run([sys.executable, "-m", "tinylm.prepare_data", "data=default", f"data.cache_dir={tmp}/cache"], check=True,
                       capture_output=True)
        procs = {n: subprocess.Popen([sys.executable, "-m", "tinylm.pretrain", *common, *VARIANTS[n],
                                      f"data.cache_dir={tmp}/cache", f"hydra.run.dir={tmp}/{i}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i, n in enumerate(names)}
        summaries = {}
        for i, (n, proc) in enumerate(procs.items()):
            out, _ = proc.communicate()
            if proc.returncode:
                print(out[-3000:])
                return proc.returncode
            summaries[n] = json.loads((Path(tmp) / str(i) / "summary.json").read_text())
    base = summaries[BASELINE]["final_dev_loss"] if BASELINE in summaries else None
    rows = [(n, f"{s['parameters'] / 1e6:.3f}M", f"{s['final_dev_loss']:.4f}",
             f"{s['final_dev_loss'] / base:.3f}x" if base else "-", f"{s['train_seconds']:.0f}")
            for n, s in summaries.items()]
    table = text_table(("variant", "params", "dev MLM loss", f"/ {BASELINE}", "train s"), rows)
    first = next(iter(summaries.values()))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    card = f"CPU ({cpu}, {os.cpu_count()} cores; 1 thread per run, {len(names)} runs at once)"
    meta = (f"card: {card}\ndate: {dt.date.today().isoformat()}\ntorch {torch.__version__}\n"
            f"command: python {' '.join(sys.argv)}\n"
            f"overrides: {' '.join(common)}\n"
            f"{first['steps']} steps, {first['tokens_seen']:,} tokens each; unigram dev loss "
            f"{first['unigram_dev_loss']:.4f}; lower is better\n")
    print(meta + "\n" + table)
    save("bert_arch", card, False, "BERT: faithful LTG/ELC-BERT vs the simplified sketch (dev MLM loss, equal steps)",
         meta + "\n" + table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
