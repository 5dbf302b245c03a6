"""The word budget: exact, never exceeded, reproducible, proportional (or weighted) to sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_sources import write_babylm

from tinylm.config import DataConfig
from tinylm.data.budget import quotas, select_budget
from tinylm.data.corpus import CorpusIndex, count_words, load_corpus, truncate_words
from tinylm.errors import InputError


def fake_index(words_per_source: dict[str, list[int]]) -> CorpusIndex:
    names = list(words_per_source)
    source = np.concatenate([np.full(len(w), i, np.int32) for i, w in enumerate(words_per_source.values())])
    words = np.concatenate([np.asarray(w, np.int64) for w in words_per_source.values()])
    n = len(words)
    return CorpusIndex(spool=Path("-"), sources=names, source=source, words=words, nbytes=words * 6,
                       split_code=np.zeros(n, np.int8), group=source.copy())


def test_quotas_sum_exactly_by_largest_remainder():
    from fractions import Fraction

    assert quotas(10, [Fraction(1)] * 3) == [4, 3, 3]
    assert quotas(100, [Fraction(50), Fraction(30), Fraction(20)]) == [50, 30, 20]
    assert quotas(7, [Fraction(2), Fraction(1)]) == [5, 2]  # 4.67 -> 5, 2.33 -> 2
    assert sum(quotas(1_000_003, [Fraction(x) for x in (17, 5, 3, 11)])) == 1_000_003


def test_budget_is_exact_proportional_and_reproducible():
    rng = np.random.default_rng(0)
    index = fake_index({"childes": rng.integers(50, 600, 300).tolist(), "gutenberg": rng.integers(50, 600, 100).tolist(),
                        "wiki": rng.integers(50, 600, 50).tolist()})
    cfg = DataConfig(budget_words=40_000)
    take, info = select_budget(index, np.ones(len(index.words), bool), cfg)
    assert take.sum() == 40_000 and (take <= index.words).all()
    avail = {n: int(index.words[index.source == i].sum()) for i, n in enumerate(index.sources)}
    for i, name in enumerate(index.sources):  # proportional to the sources' words, to the word
        assert abs(take[index.source == i].sum() - 40_000 * avail[name] / sum(avail.values())) < 1
    assert ((take > 0) & (take < index.words)).sum() <= 3  # at most one cut document per source
    again, _ = select_budget(index, np.ones(len(index.words), bool), cfg)
    assert (again == take).all()
    other_seed, _ = select_budget(index, np.ones(len(index.words), bool), DataConfig(budget_words=40_000, budget_seed=1))
    assert other_seed.sum() == 40_000 and (other_seed != take).any()
    # the subset is spread over each source, not a prefix
    chosen = np.flatnonzero(take[index.source == 0] > 0)
    assert chosen.max() > 250 and chosen.min() < 50


def test_budget_weights_larger_than_corpus_and_unknown_sources():
    index = fake_index({"a": [100] * 10, "b": [100] * 10})
    everything = np.ones(20, bool)
    take, info = select_budget(index, everything, DataConfig(budget_words=500, budget_weights={"a": 3, "b": 1}))
    assert take[:10].sum() == 375 and take[10:].sum() == 125 and info["mode"] == "weights"
    take, _ = select_budget(index, everything, DataConfig(budget_words=500, budget_weights={"a": 1}))
    assert take[:10].sum() == 500 and take[10:].sum() == 0
    with pytest.raises(InputError, match=r"data.budget_words=2,001 is larger than the corpus: 2,000 train words"):
        select_budget(index, everything, DataConfig(budget_words=2001))
    take, info = select_budget(index, everything, DataConfig(budget_words=2001, allow_smaller_corpus=True))
    assert take.sum() == 2000
    with pytest.raises(InputError, match=r"source 'a' should give 1,200 words of the budget but has 1,000"):
        select_budget(index, everything, DataConfig(budget_words=1600, budget_weights={"a": 3, "b": 1}))
    with pytest.raises(InputError, match=r"data.budget_weights: unknown source 'c'; the sources are a, b"):
        select_budget(index, everything, DataConfig(budget_words=10, budget_weights={"c": 1}))
    # only train documents count
    take, _ = select_budget(index, np.arange(20) % 2 == 0, DataConfig(budget_words=1000))
    assert take.sum() == 1000 and take[1::2].sum() == 0
    with pytest.raises(InputError, match="larger than the corpus: 1,000"):
        select_budget(index, np.arange(20) % 2 == 0, DataConfig(budget_words=1001))


def test_truncation_keeps_spacing_and_cuts_at_a_word_boundary():
    assert truncate_words("  one two\tthree  four", 3) == "  one two\tthree"
    assert truncate_words("one two", 5) == "one two"


def test_budgeted_corpus_never_exceeds_and_is_exact(tmp_path):
    root = write_babylm(tmp_path / "b", words=4000)
    for budget in (1, 777, 5003):
        cfg = DataConfig(kind="babylm", root=str(root), budget_words=budget, doc_words=150)
        train, dev = load_corpus(cfg)
        assert sum(count_words(d.text) for d in train) == budget
        assert load_corpus(cfg) == (train, dev)
    total = sum(count_words((root / f).read_text()) for f in ("childes.train", "gutenberg.train", "simple_wiki.train",
                                                               "switchboard.train"))
    with pytest.raises(InputError, match=f"is larger than the corpus: {total:,} train words"):
        load_corpus(DataConfig(kind="babylm", root=str(root), budget_words=total + 1))
