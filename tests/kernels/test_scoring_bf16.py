"""Evaluation scoring runs under bf16 autocast on CUDA (tinylm.eval.scoring). Its accuracy must
agree with fp32 scoring: a small trained GPT scores BLiMP-format pairs in fp32 and under CPU bf16
autocast (the same dtype rounding of every matmul that CUDA autocast does); the accuracies must be
within 0.5 points, and the per-item sign agreement (which candidate wins) is reported.

The model must have learnt something: after 10 smoke steps (accuracy ~55%, margins near zero) bf16
flipped 7 of 400 items (1.25 points); after 30 steps none of 600 flipped."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers import ROOT, smoke_config  # noqa: E402

from tinylm.eval.formats import read_task_file  # noqa: E402
from tinylm.eval.scoring import causal_scores, encode_scored  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "eval_samples"
FILES = ["blimp/data/anaphor_gender_agreement.jsonl", "blimp/data/determiner_noun_agreement_1.jsonl"]


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/eval_samples is absent")
def test_bf16_scoring_accuracy_matches_fp32(tmp_path, cache_dir, capsys):
    from tinylm.train.checkpoint import load_trained
    from tinylm.train.loop import pretrain

    run = tmp_path / "run"
    pretrain(smoke_config(run, cache_dir, "train.steps=30", "train.threads=1"))
    model, tok, _ = load_trained(run)
    items = [item for rel in FILES for item in read_task_file(SAMPLES / rel, SAMPLES).items[:300]]
    texts = [t for item in items for t in encode_scored(tok.sp, item.context, item.candidates)]
    bos, pad = tok.bos_id, tok.pad_id

    fp32 = causal_scores(model, texts, bos, pad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = causal_scores(model, texts, bos, pad)
    assert fp32 != bf16  # autocast did change the arithmetic

    margin32 = torch.tensor(fp32[0::2]) - torch.tensor(fp32[1::2])  # good - bad, per item
    margin16 = torch.tensor(bf16[0::2]) - torch.tensor(bf16[1::2])
    acc32 = 100 * (margin32 > 0).float().mean().item()
    acc16 = 100 * (margin16 > 0).float().mean().item()
    agree = 100 * ((margin32 > 0) == (margin16 > 0)).float().mean().item()
    with capsys.disabled():
        print(f"\nscoring {len(items)} BLiMP pairs: fp32 accuracy {acc32:.2f}, bf16 autocast {acc16:.2f}, "
              f"per-item sign agreement {agree:.2f}%")
    assert abs(acc32 - acc16) <= 0.5
    assert agree >= 95.0
