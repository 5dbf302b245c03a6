"""corpus -> word counts -> tokenizer (cached) -> shards (cached): what a training run needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.corpus import load_corpus, total_words
from tinylm.data.shards import Shard, build_shards, open_shard
from tinylm.data.tokenizer import Tokenizer, train_tokenizer
from tinylm.utils import sha256_of


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    shard_dir: Path
    train: Shard
    dev: Shard
    report: dict


def unigram_cross_entropy(train_tokens: np.ndarray, dev_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per token) of an add-one unigram model fit on train, scored on dev
    targets: the baseline a language model must beat."""
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[dev_tokens[1:]].mean())


def prepare_data(data_cfg: DataConfig, tok_cfg: TokenizerConfig) -> PreparedData:
    train_docs, dev_docs = load_corpus(data_cfg)
    corpus_hash = sha256_of("corpus-v1", [(d.source, d.text) for d in train_docs], [(d.source, d.text) for d in dev_docs])
    tok = train_tokenizer([d.text for d in train_docs], tok_cfg, data_cfg.cache_dir, corpus_hash)
    shard_dir = build_shards({"train": train_docs, "dev": dev_docs}, tok, data_cfg.cache_dir, corpus_hash)
    train, dev = open_shard(shard_dir, "train"), open_shard(shard_dir, "dev")
    baseline = unigram_cross_entropy(np.asarray(train.tokens), np.asarray(dev.tokens), tok.vocab_size)
    report = {
        "corpus_hash": corpus_hash,
        "words_train": total_words(train_docs),
        "words_dev": total_words(dev_docs),
        "documents_train": len(train_docs),
        "documents_dev": len(dev_docs),
        "tokens_train": int(len(train.tokens)),
        "tokens_dev": int(len(dev.tokens)),
        "vocab_size": tok.vocab_size,
        "tokenizer": str(tok.model_file),
        "shards": str(shard_dir),
        "unigram_dev_loss": baseline,
        "unigram_dev_perplexity": math.exp(baseline),
    }
    return PreparedData(tok, shard_dir, train, dev, report)
