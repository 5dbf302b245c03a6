"""Batches of token windows from a shard, with exact tokens- and words-seen accounting.

The training stream is cut into non-overlapping windows of seq_len + 1 tokens (inputs and the
next-token targets share seq_len of them); each epoch visits every window once in an order drawn
from (seed, epoch). The loader's whole position is `state_dict()`: two integers, so a resumed run
reads exactly the batches an uninterrupted one would.

Document ids (`train.doc_mask=true`): given the shard's document start offsets, every batch also
carries `doc_ids` (B, T): for each input position, the index (into the shard's document index) of
the document its token belongs to, so the model keeps attention (and the mLSTM its memory) inside
documents. They are a pure function of the token positions served, so resuming stays exact.
Each document is stored as <bos> ... <eos> (tinylm.data.shards), so the only target that crosses a
boundary is the <bos> of the next document predicted at the previous document's <eos>: a constant
(always <bos> after <eos>), learned at once and carrying nothing of the previous document; it is
kept so that doc_mask on and off score the very same targets (dev losses stay comparable). The
first real token of a document is predicted at its own <bos>, inside the document, as at evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64
    words: int  # words (str.split, as BabyLM counts them) that start in the targets
    doc_ids: torch.Tensor | None = None  # (B, T) int64 document index of each input position (doc_mask)


def document_ids(doc_starts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Document index of each token position (any shape), from the ascending start offsets of the
    shard's documents (docs[:, 0]): the last document that starts at or before the position."""
    return np.searchsorted(doc_starts, positions, side="right").astype(np.int64) - 1


def word_counts_of(shard, word_start: np.ndarray) -> np.ndarray:
    """(N,) words starting in each token of a shard split: its exact counts (<split>.words.bin,
    tinylm.data.words); for a shard written before them, one per piece that starts with "▁"."""
    if getattr(shard, "word_counts", None) is not None:
        return shard.word_counts
    return word_start[np.asarray(shard.tokens)].astype(np.uint8)


class TokenLoader:
    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, word_counts: np.ndarray,
                 doc_starts: np.ndarray | None = None):
        self.tokens = tokens
        self.doc_starts = doc_starts  # docs[:, 0] of the shard: batches carry doc_ids; None: they do not
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        if len(word_counts) != len(tokens):
            raise ValueError(f"word_counts has {len(word_counts)} entries for {len(tokens)} tokens; it must hold one per "
                             "token (tinylm.data.loader.word_counts_of)")
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < batch_size:
            raise ValueError(
                f"the training split has {len(tokens)} tokens: fewer than one batch of "
                f"{batch_size} x {seq_len + 1}; lower train.batch_size or train.seq_len, or add data"
            )
        # Window w is tokens[w * seq_len : w * seq_len + seq_len + 1]: a read-only strided view
        # (no copy, works on a memmap), so a batch is one fancy-indexing gather.
        itemsize = tokens.dtype.itemsize
        self._windows = np.lib.stride_tricks.as_strided(
            tokens, shape=(self.n_windows, seq_len + 1), strides=(seq_len * itemsize, itemsize), writeable=False
        )
        # the same windows over the words starting in each token (word_counts_of)
        self._word_windows = np.lib.stride_tricks.as_strided(
            word_counts, shape=(self.n_windows, seq_len + 1), strides=(seq_len * word_counts.dtype.itemsize,
                                                                       word_counts.dtype.itemsize), writeable=False
        )
        self.epoch = 0
        self.cursor = 0  # windows of this epoch already served
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_windows, generator=g)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seq_len": self.seq_len, "seed": self.seed}

    def observe_loss(self, loss: float) -> None:
        """No schedule to move on (CurriculumLoader.observe_loss: a seq_len stage switch)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        if state["seq_len"] != self.seq_len or state["seed"] != self.seed:
            raise ValueError(f"loader state {state} does not match seq_len={self.seq_len}, seed={self.seed}")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._epoch_order(self.epoch)

    def next_batch(self) -> Batch:
        if self.cursor + self.batch_size > self.n_windows:  # drop the ragged tail of the epoch
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        picks = self._order[self.cursor : self.cursor + self.batch_size].numpy()
        self.cursor += self.batch_size
        rows = self._windows[picks].astype(np.int64)
        words = int(self._word_windows[picks][:, 1:].sum(dtype=np.int64))
        doc_ids = None
        if self.doc_starts is not None:
            doc_ids = torch.from_numpy(document_ids(self.doc_starts, picks[:, None] * self.seq_len + np.arange(self.seq_len)))
        rows = torch.from_numpy(rows)
        return Batch(rows[:, :-1], rows[:, 1:], words, doc_ids)


def make_loader(shard, curriculum, seq_len: int, batch_size: int, seed: int, word_start: np.ndarray,
                steps: int, grad_accum: int = 1, doc_mask: bool = False):
    """The training loader: TokenLoader when curriculum.name == "none" (unchanged), else a
    tinylm.data.curriculum.CurriculumLoader (same interface)."""
    if curriculum is None or curriculum.name == "none":
        from dataclasses import asdict

        default = type(curriculum)() if curriculum is not None else None
        if curriculum is not None and asdict(curriculum) != asdict(default):
            changed = sorted(k for k, v in asdict(curriculum).items() if v != asdict(default)[k])
            raise ValueError(f"curriculum.name=none ignores curriculum.{', curriculum.'.join(changed)}; pick an option "
                             "(curriculum=source|difficulty|seq_len|buckets|vocab) or set curriculum.name=custom")
        return TokenLoader(shard.tokens, seq_len, batch_size, seed, word_counts_of(shard, word_start),
                           shard.docs[:, 0] if doc_mask else None)
    from tinylm.data.curriculum import CurriculumLoader

    return CurriculumLoader(shard, curriculum, seq_len, batch_size, seed, word_start, steps, grad_accum, doc_mask)


def fixed_windows(tokens: np.ndarray, seq_len: int, n_batches: int, batch_size: int) -> list[torch.Tensor]:
    """Evenly spaced (B, seq_len + 1) windows over a split: the same dev batches at every evaluation."""
    return dev_windows(tokens, seq_len, n_batches, batch_size)[0]


def dev_windows(tokens: np.ndarray, seq_len: int, n_batches: int, batch_size: int,
                doc_starts: np.ndarray | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """fixed_windows, and with doc_starts (the dev shard's docs[:, 0]) the (B, seq_len) document
    ids of each batch's input positions (else None)."""
    n_windows = (len(tokens) - 1) // seq_len
    if n_windows == 0:
        raise ValueError(f"the dev split has {len(tokens)} tokens, fewer than train.seq_len + 1 = {seq_len + 1}")
    picks = np.unique(np.linspace(0, n_windows - 1, num=min(n_windows, n_batches * batch_size)).astype(np.int64))
    rows = np.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in picks]).astype(np.int64)
    batches = [torch.from_numpy(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    if doc_starts is None:
        return batches, None
    ids = document_ids(doc_starts, picks[:, None] * seq_len + np.arange(seq_len))
    return batches, [torch.from_numpy(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
