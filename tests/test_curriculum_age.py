"""data=childes_age + curriculum=age end to end: CHILDES-with-age CSVs -> one document per transcript
with its age -> <split>.ages.npy -> batches ordered youngest first; and the real
../shared/corpora/childes_age CSV (skipped when absent)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import random

import numpy as np
import pytest
import torch
from helpers import ROOT, smoke_config
from test_data_sources import WORDS

import tinylm.train.loop as loop_module
from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.corpus import load_corpus
from tinylm.data.pipeline import prepare_data
from tinylm.data.shards import open_shard
from tinylm.errors import InputError
from tinylm.train.loop import pretrain

TOK = TokenizerConfig(vocab_size=320)
CHILDES_AGE = ROOT.parent / "shared" / "corpora" / "childes_age" / "childes_validation_in_context.csv"
# (transcript id, age in months, utterances): file order is not age order; the youngest is the longest.
TRANSCRIPTS = [("t_old", 30.5, 120), ("t_young", 12.0, 360), ("t_mid", 20.0, 120)]


def utterances(tid: str, n: int) -> list[str]:
    rng = random.Random(tid)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + " ." for _ in range(n)]


def write_csv(path, header=("text", "transcript_id", "age_in_months", "bucket"), interleave=False):
    rows = [(u, tid, age) for tid, age, n in TRANSCRIPTS for u in utterances(tid, n)]
    if interleave:  # transcripts mixed (as in the _random variant): utterances keep their relative order
        per = [[r for r in rows if r[1] == tid] for tid, *_ in TRANSCRIPTS]
        rows = [r for group in itertools.zip_longest(*per) for r in group if r is not None]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for text, tid, age in rows:
            record = {"text": text, "transcript_id": tid, "age_in_months": f"{age:.1f}", "bucket": int(age // 12)}
            w.writerow([record[h] for h in header])
    return path


@pytest.fixture(scope="module")
def ages_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("childes_age") / "childes_age.csv")


def expected_text(tid: str) -> str:
    n = next(n for t, _, n in TRANSCRIPTS if t == tid)
    return " ".join(utterances(tid, n))


def test_transcripts_are_documents_with_ages(ages_csv, tmp_path):
    cfg = DataConfig(kind="childes_age", paths=[str(ages_csv)])
    train, dev = load_corpus(cfg)
    # 3 transcripts, every 20th to dev -> the last one (too few for k = 20)
    assert [(d.text, d.source, d.age) for d in train] == [(expected_text("t_old"), "childes", 30.5),
                                                          (expected_text("t_young"), "childes", 12.0)]
    assert [(d.text, d.age) for d in dev] == [(expected_text("t_mid"), 20.0)]
    # shuffled rows (the _random variant) give the same transcripts, utterances in file order
    mixed = write_csv(tmp_path / "mixed.csv", interleave=True)
    assert load_corpus(DataConfig(kind="childes_age", paths=[str(mixed)]))[0] == train


def test_prepare_data_writes_ages_in_document_order(ages_csv, tmp_path):
    cfg = DataConfig(kind="childes_age", paths=[str(ages_csv)], out_dir=str(tmp_path / "d"))
    data = prepare_data(cfg, TOK, log=None)
    assert data.train.ages.tolist() == [30.5, 12.0] and data.dev.ages.tolist() == [20.0]
    assert len(data.train.ages) == len(data.train.docs) and data.train.sources == ["childes"]
    assert open_shard(tmp_path / "d", "train").ages.dtype == np.float64
    r = json.loads((tmp_path / "d" / "data_report.json").read_text())
    assert r["kind"] == "childes_age" and r["documents"] == {"train": 2, "dev": 1}
    assert r["ages"]["train"] == {"documents_with_age": 2, "documents_without_age": 0,
                                  "min_months": 12.0, "max_months": 30.5}
    # an age is content: changing one (same text) gives another data directory with the new age
    changed = tmp_path / "changed.csv"
    changed.write_text(ages_csv.read_text().replace(",30.5,", ",40.0,"))
    other = prepare_data(DataConfig(kind="childes_age", paths=[str(changed)], cache_dir=str(tmp_path / "c")), TOK,
                         log=None)
    same = prepare_data(DataConfig(kind="childes_age", paths=[str(ages_csv)], cache_dir=str(tmp_path / "c")), TOK,
                        log=None)
    assert other.shard_dir != same.shard_dir and other.train.ages.tolist() == [40.0, 12.0]
    # a word budget keeps the ages of the chosen documents; a budget cut keeps the age too
    budgeted = prepare_data(DataConfig(kind="childes_age", paths=[str(ages_csv)], budget_words=1000,
                                       cache_dir=str(tmp_path / "c")), TOK, log=None)
    assert budgeted.train.docs[:, 1].sum() == 1000
    assert set(budgeted.train.ages.tolist()) <= {30.5, 12.0} and len(budgeted.train.ages) == len(budgeted.train.docs)
    # other kinds write no ages
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(expected_text(t) for t, *_ in TRANSCRIPTS) + "\n")
    assert prepare_data(DataConfig(kind="text", paths=[str(plain)], cache_dir=str(tmp_path / "c")), TOK,
                        log=None).train.ages is None


def test_missing_age_column_and_bad_ages_are_input_errors(tmp_path):
    bad = write_csv(tmp_path / "no_age.csv", header=("text", "transcript_id", "bucket"))
    with pytest.raises(InputError, match=r"no_age\.csv has no column 'age_in_months'"):
        load_corpus(DataConfig(kind="childes_age", paths=[str(bad)]))
    text = write_csv(tmp_path / "ok.csv").read_text().splitlines()
    (tmp_path / "nan.csv").write_text("\n".join(text[:5] + [text[5].replace(",30.5,", ",old,")] + text[6:]) + "\n")
    with pytest.raises(InputError, match=r"nan\.csv line 6: age_in_months='old' is not a number"):
        load_corpus(DataConfig(kind="childes_age", paths=[str(tmp_path / "nan.csv")]))
    (tmp_path / "two.csv").write_text("\n".join(text[:5] + [text[5].replace(",30.5,", ",31.0,")] + text[6:]) + "\n")
    with pytest.raises(InputError, match="transcript 't_old' has age 31.0"):
        load_corpus(DataConfig(kind="childes_age", paths=[str(tmp_path / "two.csv")]))
    with pytest.raises(InputError, match="data.paths is empty"):
        load_corpus(DataConfig(kind="childes_age"))


def test_pretrain_with_age_curriculum_starts_with_the_youngest(ages_csv, tmp_path, cache_dir, monkeypatch):
    batches, shards = [], []
    real = loop_module.make_loader

    def recording(shard, *args, **kwargs):
        shards.append(shard)
        ld = real(shard, *args, **kwargs)
        nxt = ld.next_batch

        def next_batch():
            b = nxt()
            batches.append(torch.cat([b.input_ids, b.targets[:, -1:]], 1).numpy())
            return b

        ld.next_batch = next_batch
        return ld

    monkeypatch.setattr(loop_module, "make_loader", recording)
    summary = pretrain(smoke_config(tmp_path / "run", cache_dir, "data=childes_age", f"data.paths=[{ages_csv}]",
                                    "tokenizer.vocab_size=320", "curriculum=age", "curriculum.mix=0",
                                    "train.steps=6", "train.eval_every=3", "train.log_every=3"))
    assert summary["steps"] == 6 and math.isfinite(summary["final_dev_loss"])
    shard = shards[0]
    assert shard.ages.tolist() == [30.5, 12.0]
    start, n = shard.docs[1, [0, 3]]  # the youngest transcript (age 12), second in the file
    young = np.asarray(shard.tokens[start : start + n], np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(young, batches[0].shape[1])
    for batch in batches[:2]:  # p = 0 and 1/6: 20% (+) of the age-sorted stream, all inside the youngest
        for row in batch:
            assert (windows == row).all(1).any()


@pytest.mark.skipif(not CHILDES_AGE.exists(), reason="needs ../shared/corpora/childes_age")
def test_real_childes_age_csv_with_a_budget(tmp_path):
    cfg = DataConfig(kind="childes_age", paths=[str(CHILDES_AGE)], budget_words=50_000, out_dir=str(tmp_path / "d"))
    data = prepare_data(cfg, TokenizerConfig(vocab_size=1000), log=None)
    r = data.report
    assert r["words_train"] == 50_000 and r["words_per_source"].keys() == {"childes"}
    assert r["sources"]["childes"]["documents_read"] == 323  # one document per transcript
    ages = data.train.ages
    assert len(ages) == len(data.train.docs) == r["documents_train"] and not np.isnan(ages).any()
    assert np.all(np.diff(ages) >= 0)  # the in-context file is in age order, and documents keep it
    assert 6.0 <= ages.min() and ages.max() <= 65.4 and np.all(np.diff(data.dev.ages) >= 0)
    assert len(data.dev.ages) == r["documents_dev"] == 323 // 20
