"""Curricula (tinylm/data/curriculum.py): order and pacing, sequence-length schedule, buckets,
vocabulary, exact words seen, loader-state round trips, and each shipped option end to end."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import full_and_resumed, smoke_config

from tinylm.config import CurriculumConfig
from tinylm.data.curriculum import (CurriculumLoader, childes_age_documents, document_order, frequency_ranks, pace,
                                    vocab_table)
from tinylm.data.shards import Shard
from tinylm.data.tokenizer import BOS_ID, EOS_ID, UNK_ID
from tinylm.train.checkpoint import checkpoint_dirs
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics

V = 200
SOURCES = ["gutenberg", "childes", "simple_wiki"]  # shard ids 0, 1, 2
WORD_START = np.arange(V) % 2 == 0
AGES_CSV = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "childes_age" / "childes_validation_random.csv"


def build_shard(n_docs=60, seed=0, ages=None, lengths=None, content=None):
    """Documents <bos> ids... <eos>; source s uses ids in [10 + 60 s, 70 + 60 s) so a token names its source."""
    rng = np.random.default_rng(seed)
    toks, rows, feats, pos = [], [], [], 0
    for d in range(n_docs):
        n = int(lengths[d]) if lengths is not None else int(rng.integers(6, 80))
        src = d % 3
        ids = content[d] if content is not None else rng.integers(10 + 60 * src, 70 + 60 * src, n - 2)
        toks.append(np.concatenate([[BOS_ID], ids, [EOS_ID]]))
        rows.append((pos, int(np.count_nonzero(WORD_START[ids])), src, n))
        feats.append((rng.random() * 5, rng.random() * 10))
        pos += n
    return Shard(np.concatenate(toks).astype(np.uint16), np.asarray(rows, np.int64), 0,
                 np.asarray(feats, np.float32), list(SOURCES), None if ages is None else np.asarray(ages, np.float64))


def loader(shard, steps=20, seq_len=16, batch_size=4, grad_accum=1, **kw):
    return CurriculumLoader(shard, CurriculumConfig(name="test", **kw), seq_len, batch_size, 7, WORD_START, steps, grad_accum)


def sorted_stream(shard, cfg):
    perm = document_order(shard, cfg)
    return np.concatenate([shard.tokens[s : s + n] for s, n in shard.docs[perm][:, [0, 3]]]).astype(np.int64)


def window_index(stream, row, length):
    """The aligned window of the sorted stream a row is (every row must be one)."""
    n = (len(stream) - 1) // length
    for w in range(n):
        if np.array_equal(stream[w * length : w * length + length + 1], row):
            return w
    raise AssertionError("row is not an aligned window of the sorted stream")


def test_pacing_functions_by_hand():
    assert pace(0.0, "linear", 0.2, 0.8) == pytest.approx(0.2)
    assert pace(0.4, "linear", 0.2, 0.8) == pytest.approx(0.6)
    assert pace(0.8, "linear", 0.2, 0.8) == pytest.approx(1.0) and pace(1.0, "linear", 0.2, 0.8) == 1.0
    assert pace(0.2, "root", 0.0, 0.8) == pytest.approx(0.5)  # sqrt(1/4)
    assert pace(0.19, "step", 0.0, 0.8, 4) == 0.0 and pace(0.2, "step", 0.0, 0.8, 4) == pytest.approx(0.25)
    assert pace(0.61, "step", 0.2, 0.8, 4) == pytest.approx(0.2 + 0.8 * 0.75)
    with pytest.raises(ValueError):
        pace(0.5, "cubic", 0.0, 1.0)


def test_source_order_and_pacing():
    shard = build_shard()
    cfg = dict(order="source", sources=["childes", "simple_wiki", "gutenberg"], start_fraction=0.1, end_progress=0.8)
    perm = document_order(shard, CurriculumConfig(**cfg))
    ranks = {1: 0, 2: 1, 0: 2}
    seq = [ranks[s] for s in shard.docs[perm, 2]]
    assert seq == sorted(seq)  # childes, simple_wiki, gutenberg, each in shard order
    assert list(perm[: 20]) == list(range(1, 60, 3))
    ld = loader(shard, steps=20, **cfg)
    first = ld.next_batch().input_ids.numpy()  # p = 0: 10% of the stream, all childes
    content = first[(first != BOS_ID) & (first != EOS_ID)]
    assert ((content >= 70) & (content < 130)).all()
    late = [ld.next_batch().input_ids.numpy() for _ in range(19)][-1]
    assert (late >= 130).any() or (late < 70).any()  # later sources once available


def test_unknown_sources_come_last():
    shard = build_shard(n_docs=9)
    perm = document_order(shard, CurriculumConfig(order="source", sources=["simple_wiki"]))
    assert list(shard.docs[perm, 2][:3]) == [2, 2, 2] and list(perm[3:]) == [0, 1, 3, 4, 6, 7]


@pytest.mark.parametrize("score,column", [("length", None), ("surprisal", 0), ("readability", 1)])
@pytest.mark.parametrize("pacing", ["linear", "root", "step"])
def test_difficulty_order_and_pacing_fraction(score, column, pacing):
    shard = build_shard()
    cfg = CurriculumConfig(name="t", order="difficulty", score=score, pacing=pacing, start_fraction=0.1, end_progress=0.5)
    key = shard.docs[:, 3] if column is None else shard.features[:, column]
    perm = document_order(shard, cfg)
    assert np.all(np.diff(key[perm]) >= 0)
    steps, length = 10, 16
    ld = CurriculumLoader(shard, cfg, length, 4, 3, WORD_START, steps)
    stream = sorted_stream(shard, cfg)
    n_windows = (len(stream) - 1) // length
    for step in range(steps):
        p = step / steps
        fraction = pace(p, pacing, 0.1, 0.5)
        assert ld.available_fraction() == pytest.approx(fraction)
        if step in (1, 3):
            assert fraction < 1.0
        if step >= 5:
            assert fraction == pytest.approx(1.0)
        available = min(n_windows, max(4, math.ceil(fraction * n_windows)))
        batch = ld.next_batch()
        rows = torch.cat([batch.input_ids, batch.targets[:, -1:]], 1).numpy()
        assert all(window_index(stream, r, length) < available for r in rows)


def test_mixing_share_is_statistical():
    shard = build_shard(n_docs=120)
    length, steps = 8, 400
    cfg = CurriculumConfig(name="t", order="difficulty", score="length", start_fraction=0.0, end_progress=1e9, mix=0.3)
    ld = CurriculumLoader(shard, cfg, length, 4, 0, WORD_START, steps)
    stream = sorted_stream(shard, cfg)
    n_windows = (len(stream) - 1) // length
    # fraction 0 -> the first 4 windows (one batch); a mixed row lands outside them with prob (n - 4) / n
    starts = {tuple(stream[w * length : w * length + length + 1]): w for w in range(n_windows)}
    outside = rows = 0
    for _ in range(steps):
        b = ld.next_batch()
        for r in torch.cat([b.input_ids, b.targets[:, -1:]], 1).numpy():
            outside += starts[tuple(r)] >= 4
            rows += 1
    expected = 0.3 * (n_windows - 4) / n_windows
    assert abs(outside / rows - expected) < 4 * math.sqrt(expected * (1 - expected) / rows)


def test_age_order_on_hand_built_ages():
    ages = np.array([30.0, np.nan, 12.5, 24.0, 12.0, 40.0])
    shard = build_shard(n_docs=6, ages=ages)
    assert list(document_order(shard, CurriculumConfig(order="age"))) == [4, 2, 3, 0, 5, 1]  # unknown last
    with pytest.raises(ValueError, match="ages"):
        document_order(build_shard(n_docs=6), CurriculumConfig(order="age"))


@pytest.mark.skipif(not AGES_CSV.exists(), reason="needs ../shared/corpora/childes_age")
def test_age_order_on_childes_with_ages():
    docs = childes_age_documents(AGES_CSV, max_rows=3000)
    assert len(docs) > 10 and all(t for t, _ in docs)
    lengths = [min(60, len(t.split()) + 2) for t, _ in docs]
    content = [np.array([10 + hash(w) % 150 for w in t.split()][: n - 2], np.int64) for (t, _), n in zip(docs, lengths)]
    ages = np.array([a for _, a in docs])
    shard = build_shard(n_docs=len(docs), ages=ages, lengths=lengths, content=content)
    perm = document_order(shard, CurriculumConfig(order="age"))
    assert np.all(np.diff(ages[perm]) >= 0)
    ld = loader(shard, order="age", start_fraction=0.05, end_progress=0.5, steps=10, seq_len=8)
    stream = sorted_stream(shard, CurriculumConfig(order="age"))
    available = max(4, math.ceil(0.05 * ((len(stream) - 1) // 8)))  # windows available at p = 0
    b = ld.next_batch()
    rows = torch.cat([b.input_ids, b.targets[:, -1:]], 1).numpy()
    assert all(window_index(stream, r, 8) < available for r in rows)
    reached = int(np.searchsorted(np.cumsum(shard.docs[perm, 3]), available * 8 + 1)) + 1  # documents in that prefix
    assert ages[perm][:reached].max() <= np.nanmedian(ages)  # only the youngest children's transcripts


def _shapes(ld, n):
    out = []
    for _ in range(n):
        b = ld.next_batch()
        assert b.input_ids.shape == b.targets.shape
        out.append(tuple(b.input_ids.shape))
    return out


def test_seq_len_schedule_by_step_keeps_tokens_per_step():
    shard = build_shard()
    ld = loader(shard, steps=8, seq_len=32, batch_size=4, seq_len_fractions=[0.25, 0.5, 1.0], seq_len_boundaries=[2, 5])
    assert _shapes(ld, 8) == [(16, 8)] * 2 + [(8, 16)] * 3 + [(4, 32)] * 3
    ld = loader(shard, steps=8, seq_len=32, batch_size=4, grad_accum=2, seq_lens=[8, 16, 32])  # equal shares of the steps
    assert _shapes(ld, 16) == [(16, 8)] * 6 + [(8, 16)] * 4 + [(4, 32)] * 6  # boundaries at steps 3 and 5
    with pytest.raises(ValueError, match="divide"):
        loader(shard, seq_len=32, batch_size=4, seq_lens=[24, 32])
    with pytest.raises(ValueError, match="end at"):
        loader(shard, seq_len=32, seq_lens=[8, 16])


def test_seq_len_schedule_by_words():
    shard = build_shard()
    ld = loader(shard, steps=50, seq_len=32, batch_size=4, grad_accum=2, seq_lens=[8, 32], seq_len_by="words",
                seq_len_boundaries=[100])
    words, lengths = 0, []
    for step in range(10):
        start_words = words
        for _ in range(2):
            b = ld.next_batch()
            assert b.input_ids.numel() == 128
            lengths.append((b.input_ids.shape[1], start_words))
            words += b.words
    for length, at in lengths:  # the stage follows the words seen at the start of the step
        assert length == (8 if at < 100 else 32)
    assert {l for l, _ in lengths} == {8, 32}


def test_buckets_never_cross_a_document_and_keep_tokens_per_batch():
    shard = build_shard(n_docs=90)
    ld = loader(shard, seq_len=32, batch_size=4, buckets=True, bucket_min_len=4)
    doc_of = np.repeat(np.arange(len(shard.docs)), shard.docs[:, 3])
    n_batches = len(ld._order)
    seen = np.zeros(len(shard.tokens), dtype=np.int64)
    sizes = set()
    for _ in range(n_batches):
        ld.next_batch()
        b, i, j = ld._order[ld.cursor - 1]
        length = ld.bucket_lens[b]
        starts = ld.bucket_starts[b][ld._perms[b][i:j]]
        assert len(starts) * length == 128
        sizes.add(length)
        for s in starts:
            assert doc_of[s] == doc_of[s + length]  # first and last token in the same document
            seen[s + 1 : s + length + 1] += 1  # targets
    assert seen.max() == 1 and sizes >= {4, 8, 16, 32}
    # every bucket's sequences cover each document's targets up to the dropped remainders
    all_targets = np.zeros(len(shard.tokens), dtype=np.int64)
    for length, st in zip(ld.bucket_lens, ld.bucket_starts):
        for s in st:
            all_targets[s + 1 : s + length + 1] += 1
    assert all_targets.max() == 1
    per_doc = np.bincount(doc_of, weights=all_targets, minlength=len(shard.docs))
    assert np.all(shard.docs[:, 3] - 1 - per_doc < 4)
    b = ld.next_batch()  # a new epoch
    assert ld.epoch == 1 and b.input_ids.numel() == 128


def test_vocabulary_mapping_at_several_k():
    tokens = np.array([2, 10, 10, 10, 11, 11, 12, 3, 2, 13, 13, 13, 13, 3], dtype=np.uint16)
    ranks = frequency_ranks(tokens, 20)
    assert list(ranks[:7]) == list(range(7))  # specials first
    assert ranks[13] == 7 and ranks[10] == 8 and ranks[11] == 9 and ranks[12] == 10
    ids = np.arange(20)
    assert list(vocab_table(ranks, 9)[[0, 1, 2, 3, 10, 11, 12, 13, 19]]) == [0, 1, 2, 3, 10, UNK_ID, UNK_ID, 13, UNK_ID]
    assert np.array_equal(vocab_table(ranks, 20), ids)
    assert set(vocab_table(ranks, 7)[7:]) == {UNK_ID}


@pytest.mark.parametrize("targets_too", [True, False])
def test_vocabulary_curriculum_grows_and_keeps_words_exact(targets_too):
    shard = build_shard()
    plain = loader(shard, steps=10, seq_len_fractions=[1.0])
    vocab = loader(shard, steps=10, vocab_start=20, vocab_end_progress=0.5, vocab_targets=targets_too)
    ranks = frequency_ranks(shard.tokens, V)
    ks = []
    for step in range(10):
        k = vocab.vocab_k()
        ks.append(k)
        a, b = plain.next_batch(), vocab.next_batch()
        assert a.words == b.words == int(np.count_nonzero(WORD_START[a.targets.numpy()]))  # original targets
        table = vocab_table(ranks, k)
        assert torch.equal(b.input_ids, torch.from_numpy(table[a.input_ids.numpy()]))
        assert torch.equal(b.targets, torch.from_numpy(table[a.targets.numpy()]) if targets_too else a.targets)
    assert ks[0] == 20 and ks == sorted(ks) and ks[5] == V and ks[2] == round(20 + (V - 20) * 0.4)


CURRICULA = {
    "source": dict(order="source", sources=["simple_wiki", "childes"], mix=0.2),
    "difficulty": dict(order="difficulty", score="surprisal", pacing="step", mix=0.1),
    "seq_len": dict(seq_len_fractions=[0.25, 0.5, 1.0]),
    "seq_len_words": dict(seq_lens=[8, 32], seq_len_by="words", seq_len_boundaries=[150]),
    "buckets": dict(buckets=True, bucket_min_len=4),
    "vocab": dict(vocab_start=30),
    "composed": dict(order="difficulty", score="length", seq_len_fractions=[0.5, 1.0], vocab_start=30, mix=0.2),
}


@pytest.mark.parametrize("name", sorted(CURRICULA))
def test_resume_mid_epoch_reproduces_the_batches(name):
    shard = build_shard(n_docs=50)
    make = lambda: loader(shard, steps=12, seq_len=32, batch_size=4, grad_accum=2, **CURRICULA[name])  # noqa: E731
    full = make()
    batches = [full.next_batch() for _ in range(24)]
    part = make()
    for _ in range(9):
        part.next_batch()
    state = json.loads(json.dumps(part.state_dict()))  # what state.json holds
    resumed = make()
    resumed.load_state_dict(state)
    for b in batches[9:]:
        r = resumed.next_batch()
        assert torch.equal(r.input_ids, b.input_ids) and torch.equal(r.targets, b.targets) and r.words == b.words
    other = loader(shard, steps=12, seq_len=32, batch_size=4, grad_accum=2, **{**CURRICULA[name], "mix": 0.5})
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(state)


@pytest.mark.parametrize("option", ["source", "difficulty", "seq_len", "buckets", "vocab"])
def test_each_shipped_curriculum_trains_end_to_end(tmp_path, cache_dir, option):
    summary = pretrain(smoke_config(tmp_path / "run", cache_dir, f"curriculum={option}", "train.steps=6",
                                    "train.eval_every=3", "train.log_every=3"))
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert summary["steps"] == 6 and math.isfinite(summary["final_dev_loss"])
    assert rows[-1]["tokens_seen"] == 6 * 4 * 32 and 0 < rows[-1]["words_seen"] < rows[-1]["tokens_seen"]
    state = json.loads((checkpoint_dirs(tmp_path / "run")[-1] / "state.json").read_text())
    assert state["loader"]["served"] == 6 and state["words_seen"] == summary["words_seen"] == state["loader"]["words"]


def test_curriculum_run_resumes_bit_exact(tmp_path, cache_dir, monkeypatch):
    overrides = ("curriculum=difficulty", "curriculum.seq_len_fractions=[0.5,1.0]", "curriculum.vocab_start=100",
                 "train.steps=8", "train.ckpt_every=4", "train.log_every=1", "train.eval_every=4")
    _, _, a, b = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=4)
    assert a == b


def test_curriculum_none_is_the_plain_loader():
    from tinylm.data.loader import TokenLoader, make_loader, word_counts_of

    shard = build_shard()
    ld = make_loader(shard, CurriculumConfig(), 16, 4, 1, WORD_START, 10)
    ref = TokenLoader(shard.tokens, 16, 4, 1, word_counts_of(shard, WORD_START))
    assert type(ld) is TokenLoader and ld.state_dict() == ref.state_dict()
    for _ in range(5):
        assert torch.equal(ld.next_batch().input_ids, ref.next_batch().input_ids)
    assert isinstance(make_loader(shard, replace(CurriculumConfig(), name="vocab", vocab_start=20), 16, 4, 1,
                                  WORD_START, 10), CurriculumLoader)
    with pytest.raises(ValueError, match="ignores curriculum.vocab_start"):
        make_loader(shard, replace(CurriculumConfig(), vocab_start=20), 16, 4, 1, WORD_START, 10)
