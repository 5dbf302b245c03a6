"""The word budget: a deterministic subset of the training documents with exactly N words.

BabyLM counts words as whitespace-separated strings; `data.budget_words=N` keeps a subset of the
train split (after cleaning and deduplication) whose words sum to exactly N (never more):

  * per-source quotas: proportional to each source's train words (default), or to
    `data.budget_weights` ({source: weight}; sources left out get none); quotas are whole words and
    sum to N (largest remainders, ties by source order);
  * within a source, documents are taken in a fixed pseudo-random order (splitmix64 of the document
    index and `data.budget_seed`, so the subset is spread over the whole source, not a prefix)
    until the quota is met; the last one is cut at a word boundary to meet it exactly;
  * the chosen documents keep their corpus order.

A budget larger than the corpus (or a weighted quota larger than its source) is an InputError,
unless `data.allow_smaller_corpus=true`, which then takes what there is.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from tinylm.data.clean import stable_hash64
from tinylm.errors import InputError


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def quotas(budget: int, weights: list[Fraction]) -> list[int]:
    """Whole-word quotas proportional to `weights` that sum to `budget` (largest remainders)."""
    total = sum(weights)
    raw = [budget * w / total for w in weights]
    out = [int(r) for r in raw]  # floor (non-negative)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - out[i]), i))
    for i in order[: budget - sum(out)]:
        out[i] += 1
    return out


def select_budget(index, in_train: np.ndarray, cfg) -> tuple[np.ndarray, dict]:
    """(take, info): take[i] = words of document i to keep in the train split (0 = not chosen)."""
    words = np.where(in_train, index.words, 0)
    budget = int(cfg.budget_words)
    names = index.sources
    per_source = np.bincount(index.source, weights=words, minlength=len(names)).astype(np.int64)
    corpus_words = int(per_source.sum())
    info: dict = {"budget_words": budget, "train_words_available": corpus_words,
                  "available_per_source": {n: int(w) for n, w in zip(names, per_source)}}
    if budget < 0:
        raise InputError(f"data.budget_words={budget} must be >= 0 (0: no budget, use every train word)")
    if budget == 0:
        info.update(mode="none", selected_words=corpus_words)
        return words, info
    weights_cfg = dict(cfg.budget_weights or {})
    unknown = sorted(set(weights_cfg) - set(names))
    if unknown:
        raise InputError(f"data.budget_weights: unknown source {unknown[0]!r}; the sources are {', '.join(names)}")
    if any(w < 0 for w in weights_cfg.values()):
        raise InputError(f"data.budget_weights={weights_cfg} has a negative weight; weights must be >= 0")
    if budget > corpus_words and not weights_cfg:
        if not cfg.allow_smaller_corpus:
            raise InputError(
                f"data.budget_words={budget:,} is larger than the corpus: {corpus_words:,} train words after cleaning "
                "and deduplication; lower data.budget_words or set data.allow_smaller_corpus=true to use them all"
            )
        info.update(mode="all (corpus smaller than the budget)", selected_words=corpus_words)
        return words, info
    if weights_cfg:
        w = [Fraction(weights_cfg.get(n, 0.0)) for n in names]
        if sum(w) == 0:
            raise InputError(f"data.budget_weights={weights_cfg} gives every source weight 0")
        mode = "weights"
    else:
        w = [Fraction(int(x)) for x in per_source]
        mode = "proportional"
    want = quotas(budget, w)
    take = np.zeros_like(words)
    for sid, (name, q) in enumerate(zip(names, want)):
        if q > per_source[sid]:
            if not cfg.allow_smaller_corpus:
                raise InputError(
                    f"data.budget_weights: source {name!r} should give {q:,} words of the budget but has "
                    f"{int(per_source[sid]):,}; lower its weight or data.budget_words, or set data.allow_smaller_corpus=true"
                )
            q = int(per_source[sid])
        if q == 0:
            continue
        idx = np.flatnonzero((index.source == sid) & (words > 0))
        key = np.uint64(stable_hash64(f"{cfg.budget_seed}:{name}".encode()))
        order = idx[np.argsort(splitmix64(np.arange(len(idx), dtype=np.uint64) ^ key), kind="stable")]
        cum = np.cumsum(words[order])
        n_full = int(np.searchsorted(cum, q, side="right"))  # documents that fit whole
        take[order[:n_full]] = words[order[:n_full]]
        got = int(cum[n_full - 1]) if n_full else 0
        if got < q:  # cut the next one at a word boundary
            take[order[n_full]] = q - got
    info.update(mode=mode, quotas={n: int(q) for n, q in zip(names, want)},
                selected_per_source={n: int(take[index.source == i].sum()) for i, n in enumerate(names)},
                selected_words=int(take.sum()), truncated_documents=int(((take > 0) & (take < words)).sum()),
                seed=cfg.budget_seed)
    return take, info
