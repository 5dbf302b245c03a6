"""Corpus sources: where raw documents come from, streamed with bounded memory.

`plan_sources(cfg)` checks a `DataConfig` and returns a `SourcePlan`: the input streams in a fixed
order (per source: its dev files first, then its train files) and the input files to hash. Each
`Stream.documents()` yields raw document strings; cleaning, deduplication, splitting and the word
budget happen downstream (tinylm.data.corpus).

    data.kind     input                                        documents
    default       the embedded generated corpus                one per generated text
    text          files / folders (data.paths, data.dev_paths) one per non-empty line (strict UTF-8)
    babylm        data.root: <domain>.train (+ <domain>.dev,   lines grouped / long lines cut into
                  dev/<domain>.dev, ../dev/<domain>.dev)       ~data.doc_words words (DocumentCutter)
    tinystories   data.root (train.txt / valid.txt, or the     one per story (`<|endoftext|>`
                  official TinyStories*-train/valid.txt) or    separators); stories longer than
                  data.paths / data.dev_paths                  1.25 x data.doc_words are cut
    jsonl         data.paths (.jsonl files or folders)         one per record's data.text_field
    hf            datasets.load_dataset(data.hf_name, ...)     one per row's data.text_field
    childes_age   data.paths (CSV: text, transcript_id,        one per transcript (utterances joined
                  age_in_months[, bucket])                     in file order, whitespace normalised),
                                                               source "childes", with its age (months)

A stream whose `with_ages` is set yields (text, age in months) pairs instead of strings; the ages
end up in the shards' <split>.ages.npy (curriculum.order=age). They are bytes of the input files, so
the content hash covers them.

Where each kind is read: tinylm.data.readers_files (text, jsonl, hf) and tinylm.data.readers_babylm
(babylm, tinystories, childes_age), on the shared plumbing of tinylm.data.readers_common (block
reading with sha256, strict or counted-replacement UTF-8 decoding, the DocumentCutter).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.data.readers_babylm import _plan_babylm, _plan_childes_age, _plan_tinystories
from tinylm.data.readers_common import Stream
from tinylm.data.readers_files import _plan_hf, _plan_jsonl, _plan_text
from tinylm.errors import InputError
from tinylm.utils import sha256_file

KINDS = ("default", "text", "babylm", "tinystories", "jsonl", "hf", "childes_age")


@dataclass
class SourcePlan:
    kind: str
    streams: list[Stream]
    inputs: list[Path]  # files whose bytes are the corpus (hashed for the cache key)
    fingerprint_extra: dict  # what else identifies the input (default corpus, datasets fingerprint)
    describe: str  # e.g. "data.root=/data/babylm/train_10M" for messages
    clean: bool  # per-source cleaning + whitespace normalisation (not for text/default)
    dedup_default: str  # what data.dedup=auto means for this kind
    on_invalid_default: str  # what data.on_invalid_utf8=auto means for this kind
    ignored: list[str] = field(default_factory=list)  # files seen and deliberately not read


def plan_sources(cfg) -> SourcePlan:
    """Check the source options of `cfg` (a DataConfig) and list the streams to read."""
    if cfg.kind not in KINDS:
        raise InputError(f"data.kind={cfg.kind!r} is not a corpus kind; use one of {', '.join(KINDS)}")
    on_invalid_default = "error" if cfg.kind == "text" else "replace"
    on_invalid = cfg.on_invalid_utf8 if cfg.on_invalid_utf8 != "auto" else on_invalid_default
    if on_invalid not in ("error", "replace"):
        raise InputError(f"data.on_invalid_utf8={cfg.on_invalid_utf8!r} is not an option; use error, replace or auto")
    extra: dict = {}
    ignored: list[str] = []
    if cfg.kind == "default":
        from tinylm.data import default_corpus

        def generated() -> Iterator[str]:
            yield from default_corpus.generate_documents(cfg.default_words, cfg.default_seed)

        streams = [Stream("default", "auto", "the default corpus", generated, group="all")]
        inputs = []
        extra = {"default_corpus": sha256_file(Path(default_corpus.__file__)),
                 "words": cfg.default_words, "seed": cfg.default_seed}
        describe = "the default corpus"
    elif cfg.kind == "text":
        streams, inputs, describe = _plan_text(cfg, on_invalid)
    elif cfg.kind == "babylm":
        streams, inputs, describe, ignored = _plan_babylm(cfg, on_invalid)
    elif cfg.kind == "tinystories":
        streams, inputs, describe = _plan_tinystories(cfg, on_invalid)
    elif cfg.kind == "jsonl":
        streams, inputs, describe = _plan_jsonl(cfg, on_invalid)
    elif cfg.kind == "childes_age":
        streams, inputs, describe = _plan_childes_age(cfg, on_invalid)
    else:
        streams, extra, describe = _plan_hf(cfg)
        inputs = sorted({Path(f) for pattern in cfg.hf_data_files for f in glob.glob(str(Path(pattern).expanduser()))
                         if Path(f).is_file()})
    return SourcePlan(
        kind=cfg.kind, streams=streams, inputs=inputs, fingerprint_extra=extra, describe=describe,
        # childes_age: whitespace is normalised by the reader; no domain cleaning (the text is already tokenised)
        clean=cfg.kind not in ("text", "default", "childes_age"),
        dedup_default="none" if cfg.kind in ("text", "default") else "exact" if cfg.kind == "childes_age" else "near",
        on_invalid_default=on_invalid_default, ignored=ignored,
    )


def fingerprint_inputs(plan: SourcePlan) -> dict:
    """Content hashes of every input (sha256 of the whole file, not sizes or mtimes)."""
    files = {}
    for p in plan.inputs:
        files[str(p)] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return {"files": files, **plan.fingerprint_extra}
