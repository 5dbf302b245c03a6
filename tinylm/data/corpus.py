"""Corpora: documents from the sources, cleaned, deduplicated, counted, split and budgeted.

Words are counted the way BabyLM counts them: whitespace-separated strings (`str.split()`).

`build_corpus` streams every source once (tinylm.data.sources), cleans each document
(tinylm.data.clean), drops duplicates, and appends the survivors to a spool file (one document per
line, UTF-8) while keeping only small per-document arrays in memory (source, words, split). The
train/dev split (`assign_splits`) and the word budget (tinylm.data.budget) are then decisions over
those arrays, and `iter_documents` reads the chosen documents back from the spool: memory stays
bounded whatever the corpus size. `load_corpus` is the same thing materialised as two lists.
"""

from __future__ import annotations

import math
import re
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm.config import DataConfig
from tinylm.data.clean import Deduplicator, make_cleaner, validate_clean_options
from tinylm.data.readers_common import expand_paths  # noqa: F401  (re-exported)
from tinylm.data.sources import SourcePlan, plan_sources
from tinylm.errors import InputError

TRAIN, DEV, AUTO = 0, 1, 2
_SPLIT_CODE = {"train": TRAIN, "dev": DEV, "auto": AUTO}
DEDUP_MODES = ("auto", "none", "exact", "near")


@dataclass(frozen=True)
class Document:
    text: str
    source: str  # where it came from (BabyLM domain, file stem, "default"); curricula and reports use it
    age: float | None = None  # data=childes_age: the child's age in months (curriculum.order=age); None: unknown


_LONG = 1 << 20  # characters: longer texts are counted piece by piece (no list of millions of words)
_WHITESPACE = re.compile(r"\s")


def whitespace_pieces(text: str, size: int = _LONG) -> Iterator[str]:
    """`text` in pieces of about `size` characters, each cut just before a whitespace character,
    so no word spans two pieces."""
    start, n = 0, len(text)
    while start < n:
        m = _WHITESPACE.search(text, start + size) if start + size < n else None
        end = m.start() if m else n
        yield text[start:end]
        start = end


def count_words(text: str) -> int:
    """Whitespace-separated words, as BabyLM counts them (= len(text.split()))."""
    if len(text) <= _LONG:
        return len(text.split())
    return sum(len(piece.split()) for piece in whitespace_pieces(text))


def total_words(docs: list[Document]) -> int:
    return sum(count_words(d.text) for d in docs)


def split_train_dev(docs: list[Document], dev_fraction: float) -> tuple[list[Document], list[Document]]:
    """Deterministic split by document: every k-th document (k = round(1 / dev_fraction)) to dev;
    a corpus too small for that gives its last document to dev."""
    is_dev = assign_splits(np.full(len(docs), AUTO, np.int8), np.zeros(len(docs), np.int32), dev_fraction)
    return [d for d, v in zip(docs, is_dev) if not v], [d for d, v in zip(docs, is_dev) if v]


def assign_splits(codes: np.ndarray, groups: np.ndarray, dev_fraction: float) -> np.ndarray:
    """(n,) bool is-dev: documents from dev files stay dev, from train files train; the `auto`
    documents of each group go to dev every k-th (k = round(1 / dev_fraction)), or the group's last
    one when it has fewer than k (and at least 2)."""
    if not 0 < dev_fraction < 1:
        raise InputError(f"data.dev_fraction={dev_fraction} must be between 0 and 1 (exclusive)")
    every = max(2, round(1 / dev_fraction))
    is_dev = codes == DEV
    auto = codes == AUTO
    for g in np.unique(groups[auto]):
        idx = np.flatnonzero(auto & (groups == g))
        picked = idx[np.arange(len(idx)) % every == every - 1]
        if len(picked) == 0 and len(idx) >= 2:
            picked = idx[-1:]
        is_dev[picked] = True
    return is_dev


@dataclass
class SourceStats:
    documents_read: int = 0  # documents the cutter produced (before cleaning)
    words_raw: int = 0  # their words before cleaning
    words_clean: int = 0  # after cleaning, before deduplication
    documents_kept: int = 0
    words_kept: int = 0
    duplicates_exact: int = 0
    duplicates_near: int = 0
    duplicate_words: int = 0


@dataclass
class CorpusIndex:
    """The spooled corpus: document i is line i of `spool`."""

    spool: Path
    sources: list[str]  # source id -> name
    source: np.ndarray  # (n,) int32 source id
    words: np.ndarray  # (n,) int64 str.split() words
    nbytes: np.ndarray  # (n,) int64 UTF-8 bytes of the line (without "\n")
    split_code: np.ndarray  # (n,) int8 TRAIN / DEV / AUTO
    group: np.ndarray  # (n,) int32 split group
    age: np.ndarray | None = None  # (n,) float64 child age in months, NaN unknown; None: no stream has ages
    stats: dict[str, SourceStats] = field(default_factory=dict)
    files: list = field(default_factory=list)  # FileStats of every file read


def dedup_settings(cfg: DataConfig, plan: SourcePlan) -> tuple[bool, bool]:
    if cfg.dedup not in DEDUP_MODES:
        raise InputError(f"data.dedup={cfg.dedup!r} is not an option; use one of {', '.join(DEDUP_MODES)}")
    mode = plan.dedup_default if cfg.dedup == "auto" else cfg.dedup
    return mode in ("exact", "near"), mode == "near"


def build_corpus(cfg: DataConfig, plan: SourcePlan, spool: Path, log=None) -> CorpusIndex:
    """Stream, clean and deduplicate every document of `plan` into `spool`."""
    validate_clean_options(cfg)
    exact, near = dedup_settings(cfg, plan)
    names: list[str] = []
    source, words, nbytes, codes = array("i"), array("q"), array("q"), array("b")
    groups, group_ids = array("i"), {}
    ages = array("d")
    stats: dict[str, SourceStats] = {}
    dedup, dedup_source = None, None
    with open(spool, "wb") as out:
        for stream in plan.streams:
            if stream.source not in stats:
                stats[stream.source] = SourceStats()
                names.append(stream.source)
            sid = names.index(stream.source)
            gid = group_ids.setdefault(stream.group or stream.source, len(group_ids))
            st = stats[stream.source]
            if (exact or near) and dedup_source != stream.source:  # one filter per source, as BabyLM dedups by domain
                dedup = Deduplicator(exact=exact, near=near, ngram=cfg.near_dup_ngram,
                                     threshold=cfg.near_dup_threshold, sample=cfg.near_dup_sample)
                dedup_source = stream.source
            clean = make_cleaner(stream.source, cfg, plan.clean)
            code = _SPLIT_CODE[stream.split]
            if log:
                log(f"data: reading {stream.label}")
            for raw in stream.documents():
                age = math.nan
                if stream.with_ages:
                    raw, age = raw
                st.documents_read += 1
                if plan.clean:
                    st.words_raw += count_words(raw)
                text = clean(raw)
                if dedup is None and len(text) > _LONG:  # a huge data=text line: count it in pieces
                    toks, n = None, count_words(text)
                else:
                    toks = text.split()
                    n = len(toks)
                if not n:
                    continue
                st.words_clean += n
                if dedup is not None:
                    before = (dedup.stats.exact, dedup.stats.near)
                    if dedup.is_duplicate(text, toks):
                        st.duplicates_exact += dedup.stats.exact - before[0]
                        st.duplicates_near += dedup.stats.near - before[1]
                        st.duplicate_words += n
                        continue
                line = text.encode("utf-8", "replace")
                out.write(line)
                out.write(b"\n")
                st.documents_kept += 1
                st.words_kept += n
                source.append(sid)
                words.append(n)
                nbytes.append(len(line))
                codes.append(code)
                groups.append(gid)
                ages.append(age)
            if not plan.clean:
                st.words_raw = st.words_clean
    return CorpusIndex(
        spool=spool, sources=names, source=np.frombuffer(source, np.int32).copy(),
        words=np.frombuffer(words, np.int64).copy(), nbytes=np.frombuffer(nbytes, np.int64).copy(),
        split_code=np.frombuffer(codes, np.int8).copy(), group=np.frombuffer(groups, np.int32).copy(),
        age=np.frombuffer(ages, np.float64).copy() if any(s.with_ages for s in plan.streams) else None,
        stats=stats, files=[f for s in plan.streams for f in s.files],
    )


def check_splits(cfg: DataConfig, plan: SourcePlan, index: CorpusIndex, is_dev: np.ndarray) -> None:
    """The errors a user can act on: no text at all, too few documents to split, an empty dev."""
    n_auto = int((index.split_code == AUTO).sum())
    if plan.kind == "text" and not cfg.dev_paths and n_auto < 2:
        raise InputError(
            f"data.paths={list(cfg.paths)} holds {n_auto} document(s); a dev split needs at least 2 "
            "(one per line), or give data.dev_paths"
        )
    empty = [name for name, st in index.stats.items() if st.words_kept == 0 and plan.kind in ("babylm", "jsonl")]
    if empty:
        files = [s.label for s in plan.streams if s.source == empty[0]]
        raise InputError(
            f"{plan.describe}: source {empty[0]!r} ({', '.join(files)}) has no text (0 words after cleaning); "
            "fill or remove the file, or leave it out with data.domains"
        )
    if int(index.words[~is_dev].sum()) == 0:
        raise InputError(f"{plan.describe} contains no text (0 words); point it at a non-empty UTF-8 text corpus")
    if int(index.words[is_dev].sum()) == 0:
        raise InputError(f"the dev split of {plan.describe} is empty; give dev files (data.dev_paths) or more documents")


_WORDS_RE: dict[int, re.Pattern] = {}


def truncate_words(text: str, k: int) -> str:
    """The first k whitespace-separated words of `text`, cut at a word boundary (spacing kept)."""
    if k <= 0:
        return ""
    pattern = _WORDS_RE.get(k)
    if pattern is None:
        pattern = _WORDS_RE[k] = re.compile(rf"\s*\S+(?:\s+\S+){{{k - 1}}}")
    m = pattern.match(text)
    return text[: m.end()] if m else text


def iter_documents(index: CorpusIndex, take: np.ndarray, keep_every: int = 1) -> Iterator[tuple[str, int, int]]:
    """(text, source id, words) of the documents with take[i] > 0, in corpus order, read from the
    spool; a document with take[i] < words[i] is cut to its first take[i] words (the budget).
    keep_every > 1 keeps only documents whose stable hash falls in 1/keep_every (tokenizer sampling)."""
    selected = take > 0
    if keep_every > 1:
        selected &= _stable_fraction(np.arange(len(take)), keep_every)
    with open(index.spool, "rb") as f:
        for i, line in enumerate(f):
            if not selected[i]:
                continue
            text = line[:-1].decode("utf-8")
            k = int(take[i])
            if k < index.words[i]:
                text = truncate_words(text, k)
            yield text, int(index.source[i]), k


def split_ages(index: CorpusIndex, take: np.ndarray) -> np.ndarray | None:
    """Ages (months, NaN unknown) of the documents iter_documents(index, take) yields, in that order;
    None when the corpus has no ages."""
    return None if index.age is None else index.age[take > 0]


def _stable_fraction(idx: np.ndarray, every: int) -> np.ndarray:
    from tinylm.data.budget import splitmix64

    return splitmix64(idx.astype(np.uint64) + np.uint64(0x51ED270B)) % np.uint64(every) == 0


def load_corpus(cfg: DataConfig) -> tuple[list[Document], list[Document]]:
    """The train and dev documents that `cfg` names (budget applied), validated: the streaming
    pipeline materialised as lists (for small corpora, tests and notebooks)."""
    from tinylm.data.budget import select_budget

    plan = plan_sources(cfg)
    with tempfile.TemporaryDirectory(prefix="tinylm-corpus-") as tmp:
        index = build_corpus(cfg, plan, Path(tmp) / "corpus.spool")
        is_dev = assign_splits(index.split_code, index.group, cfg.dev_fraction)
        check_splits(cfg, plan, index, is_dev)
        take_train, _ = select_budget(index, ~is_dev, cfg)
        take_dev = np.where(is_dev, index.words, 0)

        def documents(take) -> list[Document]:
            ages = split_ages(index, take)
            return [Document(t, index.sources[s], None if ages is None or math.isnan(ages[i]) else float(ages[i]))
                    for i, (t, s, _) in enumerate(iter_documents(index, take))]

        train, dev = documents(take_train), documents(take_dev)
    return train, dev
