"""Does train.doc_mask help? Two runs of the same config and seed, equal steps, doc_mask off and on;
each final model's dev loss measured both ways (windows across documents, and each document kept to
itself, which is how evaluation scores single items), and training tokens/s.

    python bench/bench_doc_mask.py                         # tiny GPT, default corpus, 300 steps, 1 thread
    python bench/bench_doc_mask.py --steps 600 model=bert_tiny objective=hybrid

Writes bench/results/doc_mask_<card>_<date>.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import report
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=None, help="results file (default: bench/results/doc_mask_<card>_<date>.md)")
    p.add_argument("overrides", nargs="*", help="pretraining overrides for both runs (key=value)")
    args = p.parse_args()

    from helpers import compose_pretrain

    from tinylm.data.loader import dev_windows
    from tinylm.data.pipeline import prepare_data
    from tinylm.train.checkpoint import load_trained
    from tinylm.train.devices import Precision
    from tinylm.train.loop import evaluate
    from tinylm.train.objectives import build_objective

    torch.set_num_threads(1)
    rows, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for doc_mask in (False, True):
            overrides = ["train.threads=1", "train.progress=false", "train.milestones=false", "train.sample_every=0",
                         f"train.steps={args.steps}", f"train.doc_mask={str(doc_mask).lower()}", *args.overrides,
                         f"run_dir={tmp}/doc_mask_{doc_mask}"]
            cfg = compose_pretrain(*overrides)
            from tinylm.train.loop import pretrain

            t0 = time.perf_counter()
            summary = pretrain(cfg)
            wall = time.perf_counter() - t0
            model, _, _ = load_trained(cfg.run_dir, "cpu")
            data = prepare_data(cfg.data, cfg.tokenizer)
            tc = cfg.train
            batches, docs = dev_windows(data.dev.tokens, tc.seq_len, tc.eval_batches, tc.batch_size, data.dev.docs[:, 0])
            objective = build_objective(cfg.objective, model, model.cfg.vocab_size, tc.steps, tc.seed, torch.device("cpu"))
            autocast = Precision(torch.device("cpu"), "fp32").autocast
            across = evaluate(model, objective, batches, autocast)["dev_loss"]
            inside = evaluate(model, objective, batches, autocast, docs)["dev_loss"]
            rows.append((f"doc_mask={str(doc_mask).lower()}", f"{across:.4f}", f"{inside:.4f}",
                         f"{summary['tokens_per_s']:,.0f}", f"{wall:.0f}"))
            details.append(f"doc_mask={doc_mask}: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
                           f"{summary['words_seen']:,} words seen, unigram dev loss {summary['unigram_dev_loss']:.4f}")
    card = f"CPU ({cpu_model()}, {torch.get_num_threads()} thread)"
    table = report.text_table(("run", "dev loss across docs", "dev loss docs alone", "train tokens/s", "wall s"), rows)
    meta = (f"card: {card}, {os.cpu_count()} cores (shared machine: other jobs ran beside it)\n"
            f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\ntorch {torch.__version__}\n"
            f"command: python bench/bench_doc_mask.py {' '.join(sys.argv[1:])}\n"
            "dev loss: nats per target token over the same fixed dev windows; 'across docs' lets a window's\n"
            "documents see each other, 'docs alone' passes the windows' document ids (each document scored by\n"
            "itself, as evaluation scores single items). Same seed, data, batches and steps in both runs.\n")
    print(table)
    report.save("doc_mask", card, False, "train.doc_mask on vs off (equal steps)", meta + "\n" + table + "\n\n"
                + "\n".join(details), args.out)


if __name__ == "__main__":
    main()
