"""sources -> cleaned, deduplicated, budgeted corpus -> tokenizer -> shards: what a run needs.

`prepare_data(data_cfg, tok_cfg)` returns a `PreparedData` whose files live in one *data
directory*: `data.out_dir`, or by default `data.cache_dir/data/<key>`, where the key hashes the
content of every input file (sha256 of all its bytes, not sizes or mtimes), the data options that
shape the documents, and the tokenizer options. A directory whose data_report.json has the same key
is reused as it is; anything else is rebuilt under a temporary name and renamed into place, so a
failed or interrupted build leaves nothing half-written. Contents:

    tokenizer.model                     sentencepiece model (trained on the budgeted train split only), or
                                        with tokenizer=bytes the byte layout's spec (tinylm.data.bytes)
    train.bin, dev.bin, *.docs.npy, *.features.npy, meta.json   see tinylm.data.shards
    train.ages.npy, dev.ages.npy        only for sources with ages (data=childes_age): months per document
    data_report.json                    words (total, per source, per split), documents, duplicates
                                        removed, invalid UTF-8 replaced, budget, input hashes, tokens,
                                        unigram baseline
    train.txt, dev.txt                  only with data.keep_text=true: the exact documents, one a line
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.budget import select_budget
from tinylm.data.corpus import (
    assign_splits,
    build_corpus,
    check_splits,
    iter_documents,
    split_ages,
)
from tinylm.data.shards import Shard, open_shard, unigram_counts, write_shards
from tinylm.data.sources import fingerprint_inputs, plan_sources
from tinylm.data.bytes import VOCAB_SIZE as BYTE_VOCAB_SIZE, write_byte_tokenizer
from tinylm.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece
from tinylm.errors import InputError
from tinylm.utils import atomic_dir, sha256_file, sha256_of, sweep_leftovers, write_json_atomic

FORMAT_VERSION = "data-v3"  # v3: <split>.words.bin (exact words per token)
# Options that do not change the documents, the tokenizer or the shards (so not in the key).
_NOT_IN_KEY = ("name", "out_dir", "cache_dir", "keep_text")


@dataclass
class PreparedData:
    tokenizer: Tokenizer  # or tinylm.data.bytes.ByteTokenizer (same interface)
    shard_dir: Path  # the data directory
    train: Shard
    dev: Shard
    report: dict


def unigram_cross_entropy(train_tokens: np.ndarray, dev_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per token) of an add-one unigram model fit on train, scored on dev
    targets: the baseline a language model must beat. Reads both in bounded chunks."""
    counts = unigram_counts(train_tokens, vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    targets = dev_tokens[1:]
    total = 0.0
    for start in range(0, len(targets), 1 << 24):
        total += float(log_p[np.asarray(targets[start : start + (1 << 24)])].sum())
    return -total / len(targets)


def data_keys(data_cfg: DataConfig, tok_cfg: TokenizerConfig, fingerprint: dict) -> dict[str, str]:
    options = {k: v for k, v in asdict(data_cfg).items() if k not in _NOT_IN_KEY}
    corpus = sha256_of("corpus-v2", fingerprint, options)
    tokenizer = sha256_of("tokenizer-v2", corpus, asdict(tok_cfg))
    return {"corpus_key": corpus, "tokenizer_key": tokenizer, "data_key": sha256_of(FORMAT_VERSION, tokenizer)[:16]}


def _read_report(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "data_report.json").read_text())
    except (OSError, ValueError):
        return None


def _open(folder: Path, report: dict) -> PreparedData:
    tok = load_tokenizer(folder / "tokenizer.model")
    report = {**report, "tokenizer": str(folder / "tokenizer.model"), "shards": str(folder)}
    if report.get("stage") != "complete":
        return PreparedData(tok, folder, None, None, report)  # type: ignore[arg-type]
    return PreparedData(tok, folder, open_shard(folder, "train"), open_shard(folder, "dev"), report)


def _check_out_dir(out: Path, data_cfg: DataConfig) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"data.out_dir={data_cfg.out_dir} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "data_report.json").exists():
        raise InputError(
            f"data.out_dir={data_cfg.out_dir} exists and is not a tinylm data directory (no data_report.json); "
            "choose a new or empty folder, it is replaced whole when the data changes"
        )


def prepare_data(data_cfg: DataConfig, tok_cfg: TokenizerConfig, tokenizer_only: bool = False,
                 log=print, timings: dict | None = None) -> PreparedData:
    """The data directory for (data_cfg, tok_cfg), built if missing or stale. With
    tokenizer_only=True only the corpus pass and the tokenizer are done (train and dev are None).
    `timings`, when given, receives the seconds of each stage of a build (corpus, tokenizer, shards)."""
    if tok_cfg.model_type == "bytes":  # nothing to train: the sentencepiece options mean nothing (not in the key)
        tok_cfg = TokenizerConfig(model_type="bytes", vocab_size=BYTE_VOCAB_SIZE)
    plan = plan_sources(data_cfg)
    fingerprint = fingerprint_inputs(plan)
    keys = data_keys(data_cfg, tok_cfg, fingerprint)
    out = Path(data_cfg.out_dir).expanduser() if data_cfg.out_dir else Path(data_cfg.cache_dir) / "data" / keys["data_key"]
    _check_out_dir(out, data_cfg)
    for line in sweep_leftovers(out.parent):  # temporary folders of builds killed before their rename
        if log:
            log(f"cleanup: {line}")
    existing = _read_report(out)
    if existing and existing.get("data_key") == keys["data_key"] and (
        existing.get("stage") == "complete" or (tokenizer_only and existing.get("stage") == "tokenizer")
    ):
        return _open(out, existing)
    reuse_tokenizer = None
    if existing and existing.get("tokenizer_key") == keys["tokenizer_key"] and (out / "tokenizer.model").exists():
        reuse_tokenizer = (out / "tokenizer.model").read_bytes()
    quiet = lambda *a, **k: None
    log = log or quiet
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        work = tmp / ".work"
        work.mkdir()
        report = _build(data_cfg, tok_cfg, plan, fingerprint, keys, tmp, work, tokenizer_only, reuse_tokenizer, log,
                        timings if timings is not None else {})
        shutil.rmtree(work)
        write_json_atomic(tmp / "data_report.json", report)
        _default_permissions(tmp)
    log(f"data: {out} ready in {time.perf_counter() - t0:.1f}s")
    return _open(out, report)


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _default_permissions(folder: Path) -> None:
    """mkdtemp / mkstemp create 0700 / 0600 entries: give the data directory the usual umask ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _age_summary(index, take_train, take_dev) -> dict | None:
    """Per split: documents with a known age and the age range (months); None without ages."""
    if index.age is None:
        return None
    out = {}
    for split, take in (("train", take_train), ("dev", take_dev)):
        ages = split_ages(index, take)
        known = ages[~np.isnan(ages)]
        out[split] = {"documents_with_age": len(known), "documents_without_age": int(len(ages) - len(known)),
                      "min_months": float(known.min()) if len(known) else None,
                      "max_months": float(known.max()) if len(known) else None}
    return out


def _build(data_cfg, tok_cfg, plan, fingerprint, keys, tmp: Path, work: Path, tokenizer_only: bool,
           reuse_tokenizer: bytes | None, log, timings: dict) -> dict:
    t0 = time.perf_counter()
    index = build_corpus(data_cfg, plan, work / "corpus.spool", log=log)
    # Every byte was hashed again while streaming: a file edited during the build is caught here.
    for f in index.files:
        before = fingerprint["files"].get(f.path)
        if before is not None and before["sha256"] != f.sha256:
            raise InputError(f"{f.path} changed while it was being read; run again once it is complete")
    is_dev = assign_splits(index.split_code, index.group, data_cfg.dev_fraction)
    check_splits(data_cfg, plan, index, is_dev)
    take_train, budget_info = select_budget(index, ~is_dev, data_cfg)
    take_dev = np.where(is_dev, index.words, 0)
    t_corpus = timings["corpus"] = time.perf_counter() - t0
    timings["corpus_peak_rss_mb"] = _peak_rss_mb()
    names = index.sources

    def per_source(take):
        return {n: int(take[index.source == i].sum()) for i, n in enumerate(names)}

    words_train, words_dev = per_source(take_train), per_source(take_dev)
    report = {
        "data_key": keys["data_key"], "corpus_key": keys["corpus_key"], "tokenizer_key": keys["tokenizer_key"],
        "corpus_hash": keys["corpus_key"], "format": FORMAT_VERSION, "kind": plan.kind, "inputs": plan.describe,
        "input_files": {f.path: {"bytes": f.bytes, "sha256": f.sha256, "invalid_utf8_replaced": f.invalid_utf8}
                        for f in index.files},
        "input_fingerprint": {k: v for k, v in fingerprint.items() if k != "files"},
        "ignored_files": plan.ignored,
        "words_total": sum(words_train.values()) + sum(words_dev.values()),
        "words_train": sum(words_train.values()), "words_dev": sum(words_dev.values()),
        "words_per_source": {n: {"train": words_train[n], "dev": words_dev[n]} for n in names},
        "documents": {"train": int((take_train > 0).sum()), "dev": int(is_dev.sum())},
        "documents_train": int((take_train > 0).sum()), "documents_dev": int(is_dev.sum()),
        "duplicates_removed": {
            "exact": sum(s.duplicates_exact for s in index.stats.values()),
            "near": sum(s.duplicates_near for s in index.stats.values()),
            "words": sum(s.duplicate_words for s in index.stats.values()),
        },
        "invalid_utf8_replacements": sum(f.invalid_utf8 for f in index.files),
        "sources": {n: asdict(s) for n, s in index.stats.items()},
        "budget": budget_info,
        "ages": _age_summary(index, take_train, take_dev),
        "options": {"data": asdict(data_cfg), "tokenizer": asdict(tok_cfg)},
    }
    log(f"data: {report['words_train']:,} train + {report['words_dev']:,} dev words in "
        f"{report['documents_train']:,} + {report['documents_dev']:,} documents "
        f"({report['duplicates_removed']['exact']} exact / {report['duplicates_removed']['near']} near duplicates "
        f"removed, {report['invalid_utf8_replacements']} invalid UTF-8 replaced) in {t_corpus:.1f}s")

    # Tokenizer: the budgeted train split only (a BabyLM rule), a stable sample beyond max_train_chars.
    t1 = time.perf_counter()
    train_chars = int(index.nbytes[take_train > 0].sum())
    keep_every = max(1, math.ceil(train_chars / tok_cfg.max_train_chars)) if tok_cfg.max_train_chars > 0 else 1
    if tok_cfg.model_type == "bytes":  # UTF-8 bytes: no training step (tinylm.data.bytes)
        write_byte_tokenizer(tmp / "tokenizer.model")
    elif reuse_tokenizer is not None:  # same tokenizer key: trained on exactly these documents before
        (tmp / "tokenizer.model").write_bytes(reuse_tokenizer)
    else:
        texts = (text for text, _, _ in iter_documents(index, take_train, keep_every=keep_every))
        train_sentencepiece(texts, tok_cfg, tmp / "tokenizer.model")
        log(f"data: {tok_cfg.model_type} tokenizer ({tok_cfg.vocab_size} pieces) trained in "
            f"{time.perf_counter() - t1:.1f}s" + (f" on 1/{keep_every} of the documents" if keep_every > 1 else ""))
    timings["tokenizer"] = time.perf_counter() - t1
    timings["tokenizer_peak_rss_mb"] = _peak_rss_mb()
    tok = load_tokenizer(tmp / "tokenizer.model")
    report.update(vocab_size=tok.vocab_size, tokenizer_sha256=sha256_file(tmp / "tokenizer.model"))
    # What the tokenizer saw, for the BabyLM compliance check (tinylm/package/compliance.py).
    report["tokenizer_training"] = {"split": "train", "words": report["words_train"], "corpus_key": keys["corpus_key"],
                                    "documents_sampled_every": keep_every}
    if tokenizer_only:
        report["stage"] = "tokenizer"
        return report

    t2 = time.perf_counter()
    ages = None if index.age is None else {"train": split_ages(index, take_train), "dev": split_ages(index, take_dev)}
    meta = write_shards(tmp, {"train": iter_documents(index, take_train), "dev": iter_documents(index, take_dev)},
                        tok, names, ages=ages)
    docs = {s: np.load(tmp / f"{s}.docs.npy") for s in ("train", "dev")}
    baseline = meta["unigram_dev_loss"]
    report.update(
        stage="complete", tokens_train=meta["splits"]["train"]["tokens"], tokens_dev=meta["splits"]["dev"]["tokens"],
        tokens_per_source={n: {s: int(d[d[:, 2] == i, 3].sum()) for s, d in docs.items()} for i, n in enumerate(names)},
        unigram_dev_loss=baseline, unigram_dev_perplexity=math.exp(baseline),
    )
    timings["shards"] = time.perf_counter() - t2
    timings["shards_peak_rss_mb"] = _peak_rss_mb()
    log(f"data: {report['tokens_train']:,} train + {report['tokens_dev']:,} dev tokens written in "
        f"{timings['shards']:.1f}s")
    if data_cfg.keep_text:
        for split, take in (("train", take_train), ("dev", take_dev)):
            with open(tmp / f"{split}.txt", "w", encoding="utf-8") as f:
                f.writelines(text + "\n" for text, _, _ in iter_documents(index, take))
    return report
