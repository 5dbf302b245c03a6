"""Curricula: the order and shape of the training batches (`curriculum=...`, conf/curriculum/).

The parts compose (one `CurriculumConfig`):

- **order** (`source` | `age` | `difficulty`): the train documents are sorted (by the rank of their
  source in `sources`; by child age, `Shard.ages`; or by a difficulty score: length in tokens, mean
  unigram surprisal or readability from `*.features.npy`), easiest first, and concatenated into one
  stream. At training progress p (step / train.steps) the first `pace(p)` of the stream's windows
  are available (pacing linear / root / step, as in CLIMB); each row is drawn uniformly from them,
  or with probability `mix` from the whole stream.
- **sequence-length schedule** (GrowLength / Shortformer): seq_len grows through stages by step or
  by words seen, or with seq_len_trigger=loss when the train loss plateaus, the schedule then being
  the latest switch (tinylm.data.growlength); the batch size is train.batch_size x train.seq_len /
  seq_len, so the tokens per step stay constant. The last stage is train.seq_len (the dev loss is
  measured there).
- **buckets** (Dataset Decomposition): each document's targets are cut into power-of-two sequences
  (train.seq_len down to bucket_min_len) that never cross a document; each batch holds sequences of
  one bucket, with the batch size that keeps the tokens per batch constant; an epoch serves every
  full batch once, in a seeded order.
- **vocabulary** (CLIMB): ids outside the k most frequent (train unigram counts; specials always kept)
  become <unk> in the inputs and, with vocab_targets=true (the default), in the targets too; k grows
  from vocab_start to the vocabulary size with its own pacing. Words seen are always counted at the
  targets' positions (the shard's words per token), so they stay exact.

Rows of the ordered / scheduled loaders are drawn with an RNG seeded by (seed, batches served): the
loader's whole position is a few counters (`state_dict()`), so a resumed run reads exactly the same
batches. Progress is counted in batches served (grad_accum micro-batches per step), not read from
the loop.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tinylm.config import CurriculumConfig
from tinylm.data.growlength import TRIGGERS, LossPlateau
from tinylm.data.loader import Batch, document_ids, word_counts_of
from tinylm.data.shards import Shard, unigram_counts
from tinylm.data.tokenizer import SEP_ID, UNK_ID

PACINGS = ("linear", "root", "step")
ORDERS = ("none", "source", "age", "difficulty")
SCORES = ("length", "surprisal", "readability")


def pace(p: float, pacing: str, start: float, end_progress: float, n_steps: int = 4) -> float:
    """Fraction of the sorted data available at training progress p in [0, 1]."""
    q = min(1.0, max(0.0, p) / end_progress) if end_progress > 0 else 1.0
    if pacing == "linear":
        g = q
    elif pacing == "root":
        g = math.sqrt(q)
    elif pacing == "step":
        g = math.floor(q * n_steps) / n_steps
    else:
        raise ValueError(f"curriculum pacing {pacing!r} is not one of {', '.join(PACINGS)}")
    return start + (1.0 - start) * g


def document_order(shard: Shard, cfg: CurriculumConfig) -> np.ndarray:
    """Indices of the shard's documents, easiest (earliest) first; ties keep the shard order."""
    n = len(shard.docs)
    if cfg.order == "source":
        rank = {name: i for i, name in enumerate(cfg.sources)}
        names = shard.sources or []
        by_id = np.array([rank.get(names[s] if s < len(names) else "", len(rank)) for s in range(max(len(names), 1))])
        ids = shard.docs[:, 2]
        key = np.where(ids < len(by_id), by_id[np.minimum(ids, len(by_id) - 1)], len(rank)).astype(np.float64)
    elif cfg.order == "age":
        if shard.ages is None:
            raise ValueError("curriculum.order=age needs document ages (a *.ages.npy next to the shard); "
                             "this corpus has none: use order=source or difficulty")
        key = np.where(np.isnan(shard.ages), np.inf, shard.ages).astype(np.float64)
    elif cfg.order == "difficulty":
        if cfg.score == "length":
            key = shard.docs[:, 3].astype(np.float64)
        else:
            if shard.features is None:
                raise ValueError("curriculum.score needs the shard's *.features.npy; rebuild the data")
            key = shard.features[:, 0 if cfg.score == "surprisal" else 1].astype(np.float64)
    else:
        return np.arange(n)
    return np.argsort(key, kind="stable")


def frequency_ranks(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V,) rank of each id by train frequency (0 = most frequent; ties by id); specials rank first."""
    counts = unigram_counts(tokens, vocab_size).astype(np.float64)
    counts[: SEP_ID + 1] = np.inf
    ranks = np.empty(vocab_size, dtype=np.int64)
    ranks[np.argsort(-counts, kind="stable")] = np.arange(vocab_size)
    return ranks


def vocab_table(ranks: np.ndarray, k: int) -> np.ndarray:
    """(V,) id -> id: the k most frequent ids (and the specials) map to themselves, the rest to <unk>."""
    table = np.arange(len(ranks), dtype=np.int64)
    table[(ranks >= k) & (table > SEP_ID)] = UNK_ID
    return table


def _check(name: str, value: str, options) -> None:
    if value not in options:
        raise ValueError(f"curriculum.{name}={value!r} is not one of {', '.join(options)}")


def stage_lengths(cfg: CurriculumConfig, seq_len: int) -> list[int]:
    if cfg.seq_lens:
        lens = [int(x) for x in cfg.seq_lens]
    elif cfg.seq_len_fractions:
        lens = [max(1, int(round(f * seq_len))) for f in cfg.seq_len_fractions]
    else:
        return [seq_len]
    if lens[-1] != seq_len or any(a >= b for a, b in zip(lens, lens[1:])):
        raise ValueError(f"curriculum sequence lengths {lens} must grow and end at train.seq_len={seq_len}")
    return lens


class CurriculumLoader:
    """TokenLoader's interface (next_batch, state_dict, load_state_dict) with a curriculum."""

    def __init__(self, shard: Shard, cfg: CurriculumConfig, seq_len: int, batch_size: int, seed: int,
                 word_start: np.ndarray, steps: int, grad_accum: int = 1, doc_mask: bool = False):
        _check("order", cfg.order, ORDERS)
        _check("score", cfg.score, SCORES)
        _check("pacing", cfg.pacing, PACINGS)
        _check("vocab_pacing", cfg.vocab_pacing, PACINGS)
        _check("seq_len_by", cfg.seq_len_by, ("step", "words"))
        _check("seq_len_trigger", cfg.seq_len_trigger, TRIGGERS)
        if not 0.0 <= cfg.mix <= 1.0:
            raise ValueError(f"curriculum.mix={cfg.mix} must be in [0, 1]")
        self.cfg, self.shard, self.tokens = cfg, shard, shard.tokens
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.word_counts = word_counts_of(shard, word_start)  # words starting in each token (exact)
        self.doc_index_starts = shard.docs[:, 0] if doc_mask else None  # batches carry doc_ids (TokenLoader's)
        self.steps, self.grad_accum = max(1, steps), max(1, grad_accum)
        self.tokens_per_batch = batch_size * seq_len
        self.stages = stage_lengths(cfg, seq_len)
        for length in self.stages:
            if self.tokens_per_batch % length:
                raise ValueError(f"curriculum sequence length {length} does not divide train.batch_size x "
                                 f"train.seq_len = {self.tokens_per_batch} (tokens per batch must stay constant)")
        if len(self.stages) > 1:
            if cfg.seq_len_boundaries:
                self.boundaries = [int(b) for b in cfg.seq_len_boundaries]
            elif cfg.seq_len_by == "step":
                self.boundaries = [round(self.steps * i / len(self.stages)) for i in range(1, len(self.stages))]
            else:
                raise ValueError("curriculum.seq_len_by=words needs curriculum.seq_len_boundaries (words seen per stage start)")
            if len(self.boundaries) != len(self.stages) - 1 or self.boundaries != sorted(self.boundaries):
                raise ValueError(f"curriculum.seq_len_boundaries={self.boundaries} must be {len(self.stages) - 1} growing numbers")
        else:
            self.boundaries = []
        self.plateau = None  # seq_len_trigger=loss: the stage moves on in observe_loss
        if cfg.seq_len_trigger == "loss" and len(self.stages) > 1:
            self.plateau = LossPlateau(len(self.stages), cfg.seq_len_plateau_window, cfg.seq_len_plateau_tol,
                                       cfg.seq_len_plateau_min_steps, cfg.seq_len_plateau_ema)
            self.plateau.stage = int(np.searchsorted(self.boundaries, 0, side="right"))  # boundaries may start at 0
        if cfg.buckets and (len(self.stages) > 1 or cfg.order != "none"):
            raise ValueError("curriculum.buckets=true does not combine with an order or a sequence-length schedule")
        self.vocab_size = len(word_start)
        self.ranks = frequency_ranks(self.tokens, self.vocab_size) if cfg.vocab_start > 0 else None
        self.served = 0  # micro-batches served
        self.words = 0  # words served
        self.step_words = 0  # words served before the current optimizer step
        self.epoch, self.cursor = 0, 0  # buckets only
        if cfg.buckets:
            self._build_buckets()
        else:
            self.perm = document_order(shard, cfg) if cfg.order != "none" else None
            if self.perm is not None:
                lengths = shard.docs[self.perm, 3]
                self.cum_ends = np.cumsum(lengths)
                self.cum_starts = self.cum_ends - lengths
                self.doc_starts = shard.docs[self.perm, 0]
            if (len(self.tokens) - 1) // self.stages[0] < 1 or (len(self.tokens) - 1) // seq_len < batch_size:
                raise ValueError(f"the training split has {len(self.tokens)} tokens: fewer than one batch of "
                                 f"{batch_size} x {seq_len + 1}; lower train.batch_size or train.seq_len, or add data")

    # -- schedules ---------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.served // self.grad_accum

    def progress(self) -> float:
        return self.step / self.steps

    def _scheduled_stage(self, words: int) -> int:
        at = self.step if self.cfg.seq_len_by == "step" else words
        return int(np.searchsorted(self.boundaries, at, side="right"))

    def current_seq_len(self) -> int:
        if self.plateau is not None:
            return self.stages[self.plateau.stage]
        return self.stages[self._scheduled_stage(self.step_words)]

    def observe_loss(self, loss: float) -> dict | None:
        """The loop calls this after each optimizer step with its train loss. With
        seq_len_trigger=loss: {"seq_len": new length, "seq_len_switch": "plateau" | "schedule"} when
        the next step starts a new stage, else None (always None for the schedule trigger)."""
        if self.plateau is None:
            return None
        reason = self.plateau.observe(loss, self._scheduled_stage(self.words))  # the next step's schedule stage
        return {"seq_len": self.stages[self.plateau.stage], "seq_len_switch": reason} if reason else None

    def available_fraction(self) -> float:
        if self.cfg.order == "none":
            return 1.0
        c = self.cfg
        return pace(self.progress(), c.pacing, c.start_fraction, c.end_progress, c.pacing_steps)

    def vocab_k(self) -> int:
        if self.ranks is None:
            return self.vocab_size
        c = self.cfg
        f = pace(self.progress(), c.vocab_pacing, 0.0, c.vocab_end_progress, c.pacing_steps)
        return min(self.vocab_size, int(round(c.vocab_start + (self.vocab_size - c.vocab_start) * f)))

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"curriculum": asdict(self.cfg), "seq_len": self.seq_len, "batch_size": self.batch_size, "seed": self.seed,
                "served": self.served, "words": self.words, "step_words": self.step_words,
                "epoch": self.epoch, "cursor": self.cursor,
                **({"seq_len_trigger": self.plateau.state_dict()} if self.plateau is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        # keys added to CurriculumConfig after the checkpoint was written count as their defaults
        state = {**state, "curriculum": {**asdict(CurriculumConfig()), **(state.get("curriculum") or {})}}
        keys = ("curriculum", "seq_len", "batch_size", "seed")
        if any(state.get(k) != mine[k] for k in keys):
            raise ValueError(f"loader state {({k: state.get(k) for k in keys})} does not match this run's curriculum "
                             f"{({k: mine[k] for k in keys})}")
        self.served, self.words, self.step_words = state["served"], state["words"], state["step_words"]
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        if self.plateau is not None:
            self.plateau.load_state_dict(state["seq_len_trigger"])
        if self.cfg.buckets:
            self._order = self._epoch_batches(self.epoch)

    # -- batches -----------------------------------------------------------------------------
    def _gather(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(B, length + 1) positions in the split of stream positions starts (the sorted stream when ordered)."""
        pos = starts[:, None] + np.arange(length + 1)[None, :]
        if self.perm is not None:
            i = np.searchsorted(self.cum_ends, pos, side="right")
            pos = self.doc_starts[i] + (pos - self.cum_starts[i])
        return pos

    def _ordered_rows(self) -> np.ndarray:
        length = self.current_seq_len()
        rows = self.tokens_per_batch // length
        n_windows = (len(self.tokens) - 1) // length
        available = min(n_windows, max(rows, math.ceil(self.available_fraction() * n_windows)))
        rng = np.random.default_rng([self.seed, self.served])
        picks = rng.integers(0, available, size=rows)
        if self.cfg.mix > 0:
            mixed = rng.random(rows) < self.cfg.mix
            picks = np.where(mixed, rng.integers(0, n_windows, size=rows), picks)
        return self._gather(picks * length, length)

    def next_batch(self) -> Batch:
        if self.served % self.grad_accum == 0:
            self.step_words = self.words
        k = self.vocab_k()
        pos = self._bucket_rows() if self.cfg.buckets else self._ordered_rows()  # (B, L + 1) positions
        rows = self.tokens[pos].astype(np.int64)
        words = int(self.word_counts[pos[:, 1:]].sum(dtype=np.int64))
        inputs, targets = rows[:, :-1], rows[:, 1:]
        if k < self.vocab_size:
            table = vocab_table(self.ranks, k)
            inputs = table[inputs]
            if self.cfg.vocab_targets:
                targets = table[targets]
        self.served += 1
        self.words += words
        doc_ids = None if self.doc_index_starts is None else torch.from_numpy(document_ids(self.doc_index_starts, pos[:, :-1]))
        return Batch(torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(targets)), words,
                     doc_ids)

    # -- buckets (Dataset Decomposition) -----------------------------------------------------
    def _build_buckets(self) -> None:
        top, low = self.seq_len, self.cfg.bucket_min_len
        if top & (top - 1) or low < 1 or low & (low - 1) or low > top:
            raise ValueError(f"curriculum.buckets needs power-of-two train.seq_len ({top}) and bucket_min_len ({low}) <= it")
        starts, n = self.shard.docs[:, 0], self.shard.docs[:, 3]
        m = n - 1  # targets per document
        full, rem = m // top, m % top
        self.bucket_lens, self.bucket_starts = [], []
        # full-length sequences: document d contributes full[d] of them at starts + j * top
        reps = np.repeat(np.arange(len(starts)), full)
        j = np.arange(len(reps)) - np.repeat(np.cumsum(full) - full, full)
        self.bucket_lens.append(top)
        self.bucket_starts.append(starts[reps] + j * top)
        length = top // 2
        while length >= low:  # binary decomposition of the remainder, longest piece first
            has = (rem & length) != 0
            offset = starts + full * top + (rem & ~(2 * length - 1))
            self.bucket_lens.append(length)
            self.bucket_starts.append(offset[has])
            length //= 2
        self._order = self._epoch_batches(0)
        if not len(self._order):
            raise ValueError(f"curriculum.buckets: no bucket holds a full batch of {self.tokens_per_batch} tokens; "
                             "lower train.batch_size or add data")

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        """(n_batches, 3): bucket, first and last+1 position in that bucket's epoch permutation."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self._perms, out = [], []
        for b, (length, st) in enumerate(zip(self.bucket_lens, self.bucket_starts)):
            self._perms.append(torch.randperm(len(st), generator=g).numpy())
            rows = self.tokens_per_batch // length
            out += [(b, i, i + rows) for i in range(0, len(st) - rows + 1, rows)]
        out = np.asarray(out, dtype=np.int64).reshape(-1, 3)
        return out[torch.randperm(len(out), generator=g).numpy()]

    def _bucket_rows(self) -> np.ndarray:
        if self.cursor >= len(self._order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._epoch_batches(self.epoch)
        b, i, j = self._order[self.cursor]
        self.cursor += 1
        length = self.bucket_lens[b]
        starts = self.bucket_starts[b][self._perms[b][i:j]]
        return starts[:, None] + np.arange(length + 1)[None, :]


def childes_age_documents(path: str | Path, max_rows: int | None = None) -> list[tuple[str, float]]:
    """(text, age in months) per transcript of a CHILDES-with-age CSV (text, transcript_id,
    age_in_months, bucket): the utterances of one transcript joined by spaces, in file order."""
    docs: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f)):
            if max_rows is not None and n >= max_rows:
                break
            doc = docs.setdefault(row["transcript_id"], [[], float(row["age_in_months"] or "nan")])
            doc[0].append(row["text"].strip())
    return [(" ".join(t for t in texts if t), age) for texts, age in docs.values()]
