"""Training compute of every BabyLM recipe (conf/experiment/babylm_*.yaml): parameters, tokens
(epochs x word budget x the tokens per word of the recipe's tokenizer, measured on a corpus), FLOPs,
and the GPU minutes they take at a given MFU. Until a GPU has measured tinylm's MFU (bench/gpu_checks.sh
-> bench_train.py) the MFU is an assumption, printed beside every estimate.

    python bench/recipe_compute.py --corpus ../shared/corpora/babylm_like --mfu 0.3
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

import report
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tinylm.cli import CONF_DIR
from tinylm.config import register_configs
from tinylm.data.pipeline import prepare_data
from tinylm.models import build_model

H100_BF16_DENSE = 989e12  # FLOP/s (H100 / H200 SXM)


def recipe(name: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("pretrain", overrides=[f"experiment={name}", "run_dir=unused"]))


def tokens_per_word(cfg, corpus: str, cache: str) -> float:
    data_cfg = replace(cfg.data, root=corpus, budget_words=0, cache_dir=cache)
    data = prepare_data(data_cfg, cfg.tokenizer)
    return data.report["tokens_train"] / data.report["words_train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/corpora/babylm_like", help="a BabyLM-layout folder to measure tokens per word on")
    parser.add_argument("--cache", default=".cache/tinylm")
    parser.add_argument("--mfu", type=float, default=0.3, help="assumed model FLOPs utilisation on the GPU")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    register_configs()
    names = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("babylm_strict*.yaml"))
    rows, ratio_by_vocab = [], {}
    for name in names:
        cfg = recipe(name)
        vocab = cfg.tokenizer.vocab_size
        if vocab not in ratio_by_vocab:
            ratio_by_vocab[vocab] = tokens_per_word(cfg, args.corpus, args.cache)
        with torch.device("meta"):
            model = build_model(replace(cfg.model, vocab_size=vocab))
        tokens = cfg.train.epochs * cfg.data.budget_words * ratio_by_vocab[vocab]
        flops = model.flops_per_token(cfg.train.seq_len) * tokens
        rows_per_step = cfg.train.batch_size * cfg.train.grad_accum
        steps = int(tokens / (rows_per_step * cfg.train.seq_len))
        minutes = flops / (H100_BF16_DENSE * args.mfu) / 60
        rows.append((name, f"{model.num_params(non_embedding=False) / 1e6:.1f}M", f"{tokens / 1e6:,.0f}M", f"{steps:,}",
                     f"{flops:.2e}", f"{minutes:,.1f}"))
    header = ("recipe", "params", "tokens (10 ep.)", "steps", "train FLOPs", f"H100 min @ MFU {args.mfu:g} (assumed)")
    ratios = ", ".join(f"{v}: {r:.3f}" for v, r in sorted(ratio_by_vocab.items()))
    body = "\n".join([
        f"card: CPU ({platform.machine()}), no GPU measurement: the minutes assume MFU {args.mfu:g} on an H100/H200",
        f"date: {dt.date.today().isoformat()}", f"command: {' '.join(['python', *sys.argv])}",
        f"tokens per word on {args.corpus} by vocabulary: {ratios}", "", report.text_table(header, rows)])
    print(body)
    report.save("recipes_compute", "cpu", False, "BabyLM recipes: training compute", body, args.out)


if __name__ == "__main__":
    main()
