"""Token shards: each split tokenized once, streaming, into a flat memmap plus a document index.

Layout of a shard folder (the data directory of tinylm.data.pipeline, built under a temporary
name and renamed, so an interrupted build leaves nothing half-written):

    train.bin, dev.bin          token ids, uint16 when the vocabulary fits, else uint32;
                                each document is laid out as  <bos> tokens... <eos>
    train.words.bin, dev.words.bin      uint8 per token: the words (str.split, as BabyLM counts them)
                                that start in it (tinylm.data.words), so words seen are exact
    train.docs.npy, dev.docs.npy        (n_docs, 4) int64 columns DOC_COLUMNS:
                                start offset, word count, source id, tokens (incl. <bos>/<eos>)
    train.features.npy, dev.features.npy  (n_docs, 2) float32 columns FEATURE_COLUMNS (difficulty):
                                mean unigram surprisal of the document's tokens (nats, add-one
                                unigram model of the train split), readability (ARI: 4.71 chars/word
                                + 0.5 words/sentence - 21.43)
    train.ages.npy (optional)   (n_docs,) float64 child age in months, NaN unknown (write_shards(ages=...))
    meta.json                   dtype, sources, column names, token / word / document counts

Tokenization streams: documents are encoded in batches (sentencepiece's own threads), written as
they come, so memory is bounded by one batch whatever the corpus size. Identical inputs give
identical bytes.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from tinylm.data.clean import SENTENCE_END
from tinylm.data.corpus import whitespace_pieces
from tinylm.data.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tinylm.data.words import fit_uint8

DOC_COLUMNS = ("start", "words", "source", "tokens")
FEATURE_COLUMNS = ("mean_unigram_surprisal", "readability_ari")
_BATCH_CHARS = 4_000_000  # characters encoded per batch
_PIECE_CHARS = 100_000  # longer documents are encoded in pieces cut at spaces (same ids)
_CHUNK_TOKENS = 1 << 24  # tokens read at a time by the unigram passes


@dataclass
class Shard:
    tokens: np.ndarray  # (N,) memmap of token ids
    docs: np.ndarray  # (n_docs, 4): DOC_COLUMNS
    words: int
    features: np.ndarray | None = None  # (n_docs, 2): FEATURE_COLUMNS
    sources: list[str] = field(default_factory=list)  # source id -> name
    ages: np.ndarray | None = None  # (n_docs,) float: child age in months (NaN: unknown), from <split>.ages.npy
    word_counts: np.ndarray | None = None  # (N,) uint8 memmap: words (str.split) starting in each token


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def readability(text: str) -> float:
    """Automated Readability Index: 4.71 * characters/word + 0.5 * words/sentence - 21.43
    (characters = non-space characters; a sentence ends at . ! ? ...)."""
    n_words = n_chars = n_sentences = 0
    for piece in whitespace_pieces(text):  # one piece unless the document is huge
        words = piece.split()
        n_words += len(words)
        n_chars += sum(map(len, words))
        n_sentences += len(SENTENCE_END.findall(piece))
    if not n_words:
        return 0.0
    return 4.71 * n_chars / n_words + 0.5 * n_words / max(1, n_sentences) - 21.43


def _pieces(text: str) -> list[str]:
    """A long document cut at spaces into pieces sentencepiece encodes to the same ids."""
    out, start = [], 0
    while len(text) - start > _PIECE_CHARS:
        cut = text.rfind(" ", start + 1, start + _PIECE_CHARS)
        if cut <= start:
            cut = start + _PIECE_CHARS
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


class SplitWriter:
    """Appends documents of one split to `<name>.bin` and collects their index rows."""

    def __init__(self, folder: Path, name: str, tok: Tokenizer, dtype):
        self.path = folder / f"{name}.bin"
        self.file = open(self.path, "wb")
        self.words_file = open(folder / f"{name}.words.bin", "wb")
        self.tok, self.dtype = tok, np.dtype(dtype)
        self.rows: list[np.ndarray] = []
        self.ari = array("d")  # readability per document (compact: one float each)
        self.n_tokens = 0
        self.batch: list[tuple[str, int, int]] = []
        self.batch_chars = 0
        self.counts = np.zeros(tok.vocab_size, dtype=np.int64)  # unigram counts, <bos>/<eos> included

    def add(self, text: str, source: int, words: int) -> None:
        self.batch.append((text, source, words))
        self.batch_chars += len(text)
        if self.batch_chars >= _BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        texts, owners = [], []
        for i, (text, _, _) in enumerate(self.batch):
            parts = _pieces(text) if len(text) > _PIECE_CHARS else [text]
            texts.extend(parts)
            owners.extend([i] * len(parts))
        encoded = self.tok.encode(texts)
        self._write_word_counts(texts, owners, encoded)
        lengths = np.zeros(len(self.batch), dtype=np.int64)
        np.add.at(lengths, np.asarray(owners, dtype=np.int64), np.fromiter(map(len, encoded), np.int64, len(encoded)))
        flat = np.fromiter(chain.from_iterable(encoded), dtype=self.dtype, count=int(lengths.sum()))
        spans = lengths + 2
        ends = np.cumsum(spans)
        starts = ends - spans
        out = np.empty(int(ends[-1]), dtype=self.dtype)
        content = np.ones(len(out), dtype=bool)
        content[starts] = False
        content[ends - 1] = False
        out[content] = flat
        out[starts] = BOS_ID
        out[ends - 1] = EOS_ID
        self.file.write(out.tobytes())
        self.counts += np.bincount(out, minlength=len(self.counts))[: len(self.counts)]
        meta = np.asarray([(s, w) for _, s, w in self.batch], dtype=np.int64).reshape(-1, 2)
        self.rows.append(np.column_stack([starts + self.n_tokens, meta[:, 1], meta[:, 0], spans]))
        self.ari.extend(readability(t) for t, _, _ in self.batch)
        self.n_tokens += int(ends[-1])
        self.batch, self.batch_chars = [], 0

    def _write_word_counts(self, texts: list[str], owners: list[int], encoded: list[list[int]]) -> None:
        """<name>.words.bin: the words (str.split) starting in each token, laid out like the tokens
        (<bos> 0, content, <eos> with the words that produced no token). tinylm.data.words."""
        parts = self.tok.word_counts(texts, encoded)
        docs: list[np.ndarray] = []
        for i, counts in enumerate(parts):
            first_of_doc = i == 0 or owners[i - 1] != owners[i]
            if not first_of_doc and texts[i] and texts[i - 1] and not texts[i][0].isspace() and not texts[i - 1][-1].isspace():
                counts[int(np.flatnonzero(counts)[0])] -= 1  # a long word cut between two pieces: counted once
            if first_of_doc:
                docs.append(np.concatenate([[0], counts]))
            else:  # words after the previous piece's last token start in this piece's first token
                tail = docs[-1][-1]
                counts[0] += tail
                docs[-1] = np.concatenate([docs[-1][:-1], counts])
        for (_, _, words), counts in zip(self.batch, docs):
            if int(counts.sum()) != words:
                raise RuntimeError(f"word count per token ({int(counts.sum())}) differs from str.split() ({words})")
        self.words_file.write(np.concatenate([fit_uint8(c) for c in docs]).tobytes())

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        self.flush()
        for f in (self.file, self.words_file):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        index = np.concatenate(self.rows) if self.rows else np.zeros((0, len(DOC_COLUMNS)), np.int64)
        return index.astype(np.int64), np.frombuffer(self.ari, dtype=np.float64).copy()


def _chunks(tokens: np.ndarray):
    for start in range(0, len(tokens), _CHUNK_TOKENS):
        yield tokens[start : start + _CHUNK_TOKENS]


def unigram_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for chunk in _chunks(tokens):
        counts += np.bincount(chunk, minlength=vocab_size)[:vocab_size]
    return counts


def read_tokens(path: Path, dtype, start: int, end: int) -> np.ndarray:
    """tokens[start:end] of a .bin file by a plain read (no memory map: the pages of a whole
    100M-token file never count against this process's memory)."""
    dtype = np.dtype(dtype)
    with open(path, "rb") as f:
        f.seek(start * dtype.itemsize)
        return np.fromfile(f, dtype=dtype, count=end - start)


def mean_surprisal(path: Path, dtype, index: np.ndarray, neg_log_p: np.ndarray) -> np.ndarray:
    """Per document: mean of neg_log_p over its content tokens (<bos>/<eos> excluded), read in
    bounded chunks of whole documents."""
    table = neg_log_p.astype(np.float64).copy()
    table[[BOS_ID, EOS_ID]] = 0.0
    out = np.zeros(len(index), dtype=np.float64)
    i = 0
    while i < len(index):
        start = int(index[i, 0])
        j = max(int(np.searchsorted(index[:, 0], start + _CHUNK_TOKENS, side="left")), i + 1)
        end = int(index[j - 1, 0] + index[j - 1, 3])
        values = table[read_tokens(path, dtype, start, end)]
        out[i:j] = np.add.reduceat(values, index[i:j, 0] - start) / np.maximum(index[i:j, 3] - 2, 1)
        i = j
    return out


def unigram_loss_from_counts(counts: np.ndarray, path: Path, dtype, n_tokens: int) -> float:
    """Cross-entropy (nats/token) of the add-one unigram model `counts` on the targets (tokens[1:])
    of a .bin file, read in chunks."""
    log_p = np.log((counts.astype(np.float64) + 1.0) / (counts.sum() + len(counts)))
    total = 0.0
    for start in range(1, n_tokens, _CHUNK_TOKENS):
        total += float(log_p[read_tokens(path, dtype, start, min(n_tokens, start + _CHUNK_TOKENS))].sum())
    return -total / max(n_tokens - 1, 1)


def write_shards(folder: Path, splits: dict[str, Iterable[tuple[str, int, int]]], tok: Tokenizer,
                 sources: list[str], ages: dict[str, np.ndarray] | None = None) -> dict:
    """Tokenize each split's (text, source id, words) documents into `folder` (which must exist and
    be private to this build); returns meta (also written as meta.json, last). With a train and a
    dev split, meta["unigram_dev_loss"] is the add-one unigram baseline (train counts, dev targets)."""
    dtype = token_dtype(tok.vocab_size)
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size, "sources": list(sources),
            "doc_columns": list(DOC_COLUMNS), "feature_columns": list(FEATURE_COLUMNS), "splits": {}}
    indexes, aris, counts = {}, {}, {}
    for name, docs in splits.items():
        writer = SplitWriter(folder, name, tok, dtype)
        for text, source, words in docs:
            writer.add(text, source, words)
        indexes[name], aris[name] = writer.close()
        counts[name] = writer.counts
        np.save(folder / f"{name}.docs.npy", indexes[name])
        meta["splits"][name] = {"tokens": writer.n_tokens, "documents": len(indexes[name]),
                                "words": int(indexes[name][:, 1].sum())}
    # Difficulty: surprisal under the add-one unigram model of the train split (or the first split).
    base = "train" if "train" in splits else next(iter(splits))
    content = counts[base].astype(np.float64)
    content[[BOS_ID, EOS_ID]] = 0.0
    neg_log_p = -np.log((content + 1.0) / (content.sum() + tok.vocab_size))
    for name in splits:
        surprisal = mean_surprisal(folder / f"{name}.bin", dtype, indexes[name], neg_log_p)
        features = np.column_stack([surprisal, aris[name]]).astype(np.float32).reshape(-1, len(FEATURE_COLUMNS))
        np.save(folder / f"{name}.features.npy", features)
    for name, values in (ages or {}).items():  # per-document ages (curriculum.order=age)
        np.save(folder / f"{name}.ages.npy", np.asarray(values, dtype=np.float64))
    if "train" in splits and "dev" in splits and meta["splits"]["dev"]["tokens"] > 1:
        meta["unigram_dev_loss"] = unigram_loss_from_counts(counts["train"], folder / "dev.bin", dtype,
                                                            meta["splits"]["dev"]["tokens"])
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _open_tokens(folder: Path, split: str, meta: dict) -> np.ndarray:
    n = meta["splits"][split]["tokens"]
    if n == 0:
        return np.zeros(0, dtype=np.dtype(meta["dtype"]))
    return np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))


def open_shard(folder: str | Path, split: str) -> Shard:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    features = folder / f"{split}.features.npy"
    ages = folder / f"{split}.ages.npy"
    return Shard(
        tokens=_open_tokens(folder, split, meta),
        docs=np.load(folder / f"{split}.docs.npy"),
        words=meta["splits"][split]["words"],
        features=np.load(features) if features.exists() else None,
        sources=meta.get("sources", []),
        ages=np.load(ages) if ages.exists() else None,
        word_counts=_open_word_counts(folder, split, meta),
    )


def _open_word_counts(folder: Path, split: str, meta: dict) -> np.ndarray | None:
    """<split>.words.bin (None for shards written before it)."""
    path, n = folder / f"{split}.words.bin", meta["splits"][split]["tokens"]
    if not path.exists():
        return None
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n,)) if n else np.zeros(0, dtype=np.uint8)
