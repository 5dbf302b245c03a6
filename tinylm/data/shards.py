"""Token shards: a corpus split tokenized once into a flat memmap, plus a document index.

Layout of a shard folder (cached under data.cache_dir/shards/<key>, key = hash of the corpus,
the tokenizer and the options; built under a temporary name and renamed, so an interrupted build
leaves nothing half-written):

    train.bin, dev.bin        token ids, uint16 when the vocabulary fits, else uint32;
                              each document is laid out as  <bos> tokens... <eos>
    train.docs.npy, dev.docs.npy   (n_docs, 2) int64: start offset and word count per document
    meta.json                 dtype, token / word / document counts, the key's inputs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.data.corpus import Document, count_words
from tinylm.data.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tinylm.utils import atomic_dir, sha256_of

_ENCODE_BATCH = 4096  # documents tokenized at a time: bounds memory whatever the corpus size


@dataclass
class Shard:
    tokens: np.ndarray  # (N,) memmap of token ids
    docs: np.ndarray  # (n_docs, 2): start offset, word count
    words: int


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def _write_split(docs: list[Document], tok: Tokenizer, path: Path, dtype) -> tuple[int, np.ndarray]:
    offsets, n_tokens = [], 0
    with open(path, "wb") as f:
        for start in range(0, len(docs), _ENCODE_BATCH):
            batch = docs[start : start + _ENCODE_BATCH]
            for doc, ids in zip(batch, tok.encode([d.text for d in batch])):
                offsets.append((n_tokens, count_words(doc.text)))
                row = np.asarray([BOS_ID, *ids, EOS_ID], dtype=dtype)
                f.write(row.tobytes())
                n_tokens += len(row)
    return n_tokens, np.asarray(offsets, dtype=np.int64).reshape(-1, 2)


def build_shards(
    splits: dict[str, list[Document]], tok: Tokenizer, cache_dir: str | Path, corpus_hash: str
) -> Path:
    """Tokenize each split into `<split>.bin`; returns the (cached) shard folder."""
    tokenizer_hash = sha256_of(tok.model_file.read_bytes().hex())
    key = sha256_of("shards-v1", corpus_hash, tokenizer_hash, sorted(splits))[:16]
    final = Path(cache_dir) / "shards" / key
    if (final / "meta.json").exists():
        return final
    dtype = token_dtype(tok.vocab_size)
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size, "corpus_hash": corpus_hash,
            "tokenizer_hash": tokenizer_hash, "splits": {}}
    with atomic_dir(final) as tmp:
        for name, docs in splits.items():
            n_tokens, index = _write_split(docs, tok, tmp / f"{name}.bin", dtype)
            np.save(tmp / f"{name}.docs.npy", index)
            meta["splits"][name] = {"tokens": n_tokens, "documents": len(docs), "words": int(index[:, 1].sum())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return final


def open_shard(folder: str | Path, split: str) -> Shard:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    info = meta["splits"][split]
    tokens = np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(info["tokens"],))
    return Shard(tokens=tokens, docs=np.load(folder / f"{split}.docs.npy"), words=info["words"])
