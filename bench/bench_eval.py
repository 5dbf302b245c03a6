"""Minimal-pair scoring speed: a BLiMP-sized set (67k pairs) with a ~30M causal GPT.

    python bench/bench_eval.py                  # CUDA: all 67k pairs; CPU: a sample, extrapolated
    python bench/bench_eval.py --pairs 2000

The pairs are the BLiMP sample files in ../shared/eval_samples/blimp (3 x 1000 real pairs), cycled
up to --pairs; the model has the gpt_30m shape with random weights (speed does not depend on the
weights) and a 2048-piece BPE tokenizer trained on the pairs themselves (too little text for
the 16k of a real BabyLM run; the embedding size barely changes the scoring cost). Timed: tokenization with scored
spans + batched causal scoring (tinylm.eval.scoring), as `python -m tinylm.eval` runs them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from report import save

from tinylm.config import ModelConfig, TokenizerConfig
from tinylm.data.tokenizer import BOS_ID, PAD_ID, train_tokenizer
from tinylm.eval.formats import read_tasks
from tinylm.eval.scoring import causal_scores, encode_scored
from tinylm.models import build_model

BLIMP_PAIRS = 67_000
SHARED_BLIMP = Path(__file__).resolve().parent.parent.parent / "shared" / "eval_samples" / "blimp"


def main() -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=BLIMP_PAIRS if cuda else 1500)
    p.add_argument("--batch-size", type=int, default=256 if cuda else 64)
    p.add_argument("--tasks", default=str(SHARED_BLIMP))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not Path(args.tasks).is_dir():
        print(f"bench_eval.py: {args.tasks} is absent; pass --tasks FOLDER with BLiMP-format files. Nothing to do.")
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    files, _ = read_tasks(args.tasks)
    items = [item for f in files for item in f.items]
    items = [items[i % len(items)] for i in range(args.pairs)]

    with tempfile.TemporaryDirectory() as tmp:
        texts = sorted({c for it in items for c in it.candidates})
        tok = train_tokenizer(texts * 4, TokenizerConfig(vocab_size=2048), tmp, "bench-eval")
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=tok.vocab_size, n_layer=8, n_head=8, d_model=512, max_seq_len=512)
        model = build_model(cfg).to(device).eval()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
        t0 = time.perf_counter()
        scored = [s for it in items for s in encode_scored(tok.sp, it.context, it.candidates)]
        t_tok = time.perf_counter() - t0
        with torch.no_grad(), autocast:
            causal_scores(model, scored[: 2 * args.batch_size], BOS_ID, PAD_ID, args.batch_size, device=device)  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            causal_scores(model, scored, BOS_ID, PAD_ID, args.batch_size, device=device)
            if cuda:
                torch.cuda.synchronize()
        t_score = time.perf_counter() - t1

    total = t_tok + t_score
    full = total * BLIMP_PAIRS / args.pairs
    card = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    date = dt.date.today().isoformat()
    n_params = sum(p.numel() for p in model.parameters())
    report = (f"card: {card}\ndate: {date}\ntorch {torch.__version__}\ncommand: {' '.join(sys.argv)}\n"
              f"model: gpt_30m shape ({n_params / 1e6:.1f}M parameters with a {tok.vocab_size}-piece vocabulary), "
              f"{'bf16 autocast' if cuda else 'fp32'}, batch {args.batch_size}\n\n"
              f"pairs scored:           {args.pairs:,}\n"
              f"tokenize (scored spans): {t_tok:.2f} s\n"
              f"causal scoring:          {t_score:.2f} s  ({args.pairs / t_score:,.0f} pairs/s)\n"
              f"67k pairs (BLiMP size):  {full:.1f} s{' (extrapolated)' if args.pairs != BLIMP_PAIRS else ''}; goal on one GPU: <= 120 s\n")
    print(report)
    save("eval", card, cuda, "Minimal-pair scoring speed", report.rstrip("\n"), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
