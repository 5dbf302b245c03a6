"""Readers for the child-directed / small-world corpora: data=babylm (a BabyLM train_10M /
train_100M folder of <domain>.train files, dev files found beside them; text cut into documents of
about data.doc_words words), data=tinystories (stories separated by `<|endoftext|>`, long ones cut)
and data=childes_age (CSV utterances grouped into one document per transcript, with its age in
months). Each `_plan_<kind>(cfg, on_invalid)` returns the streams and input files that
tinylm.data.sources.plan_sources puts into its SourcePlan; the reading itself is
tinylm.data.readers_common.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from tinylm.data.readers_common import DocumentCutter, Stream, _file_stream, expand_paths, iter_lines
from tinylm.errors import InputError

EOT = "<|endoftext|>"
CHILDES_AGE_COLUMNS = ("text", "transcript_id", "age_in_months")
BABYLM_DOMAINS = ("bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki", "switchboard")
TINYSTORIES_TRAIN = ("train.txt", "TinyStoriesV2-GPT4-train.txt", "TinyStories-train.txt")
TINYSTORIES_DEV = ("valid.txt", "TinyStoriesV2-GPT4-valid.txt", "TinyStories-valid.txt")


# ------------------------------------------------------------------------------------ babylm


def _cut_stream(doc_words: int):
    def make(segments: Iterator[str]) -> Iterator[str]:
        cutter = DocumentCutter(doc_words)
        for seg in segments:
            yield from cutter.feed(seg)
        yield from cutter.finish()

    return make


def _corpus_root(cfg, what: str, download: str) -> Path:
    """data.root as an existing folder, or an InputError that says how to get the corpus."""
    if not cfg.root:
        raise InputError(f"data.root is empty; pass data.root=FOLDER ({what}), e.g. after `{download}`")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise InputError(f"data.root: {cfg.root} does not exist or is not a folder; download the corpus with "
                         f"`{download}` or point data.root at the folder ({what})")
    return root


def _babylm_domain(path: Path) -> str | None:
    for suffix in (".train", ".train.txt"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _plan_babylm(cfg, on_invalid) -> tuple[list[Stream], list[Path], str, list[str]]:
    root = _corpus_root(cfg, "a BabyLM train_10M / train_100M folder of <domain>.train files",
                        "python data_prep/download_babylm.py --out data/babylm")
    describe = f"data.root={cfg.root}"
    train = {d: p for p in sorted(root.iterdir()) if p.is_file() and (d := _babylm_domain(p))}
    if not train:
        subs = sorted(p.name for p in root.iterdir() if p.is_dir() and any(root.joinpath(p.name).glob("*.train")))
        hint = f"; it has {', '.join(subs)}: point data.root at one of them" if subs else ""
        raise InputError(f"data.root: {root} holds no <domain>.train files{hint}")
    domains = sorted(train)
    if cfg.domains:
        unknown = [d for d in cfg.domains if d not in train]
        if unknown:
            raise InputError(
                f"data.domains: unknown domain {unknown[0]!r}; {root} has {', '.join(domains)}"
            )
        domains = list(dict.fromkeys(cfg.domains))
    dev_dirs = [root, root / "dev"]
    if root.name.lower().startswith("train"):
        dev_dirs.append(root.parent / "dev")
    streams, inputs = [], []
    make = _cut_stream(cfg.doc_words)
    for d in domains:
        dev = next((p for folder in dev_dirs for name in (f"{d}.dev", f"{d}.dev.txt")
                    if (p := folder / name).is_file()), None)
        if dev is not None:
            streams.append(_file_stream(d, "dev", dev, "data.root", on_invalid, make))
            inputs.append(dev)
        streams.append(_file_stream(d, "train" if dev is not None else "auto", train[d], "data.root", on_invalid, make))
        inputs.append(train[d])
    ignored = [str(p) for p in sorted(root.iterdir()) if p.is_file() and p.name.endswith((".test", ".test.txt"))]
    ignored += [str(train[d]) for d in sorted(set(train) - set(domains))]
    return streams, inputs, describe, ignored


# ------------------------------------------------------------------------------- tinystories


def _stories(doc_words: int):
    """TinyStories: records end at `<|endoftext|>` (on its own line or inline)."""

    def make(segments: Iterator[str]) -> Iterator[str]:
        cutter = DocumentCutter(doc_words)
        for seg in segments:
            parts = seg.split(EOT)
            for i, part in enumerate(parts):
                if i:
                    yield from cutter.finish()
                yield from cutter.feed(part)
        yield from cutter.finish()

    return make


def _plan_tinystories(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    make = _stories(cfg.doc_words)
    if cfg.paths:
        train = expand_paths(cfg.paths, "data.paths")
        dev = expand_paths(cfg.dev_paths, "data.dev_paths") if cfg.dev_paths else []
        describe = f"data.paths={list(cfg.paths)}"
    else:
        root = _corpus_root(cfg, "TinyStories train/valid files, or give data.paths=[...]",
                            "python data_prep/download_tinystories.py --out data/tinystories")
        describe = f"data.root={cfg.root}"
        train = [p for name in TINYSTORIES_TRAIN if (p := root / name).is_file()][:1]
        dev = [p for name in TINYSTORIES_DEV if (p := root / name).is_file()][:1]
        if not train:
            raise InputError(f"data.root: {root} has none of {', '.join(TINYSTORIES_TRAIN)}; point it at a TinyStories folder")
    split = "train" if dev else "auto"
    streams = [_file_stream("tinystories", "dev", p, "data.dev_paths", on_invalid, make) for p in dev]
    streams += [_file_stream("tinystories", split, p, "data.paths", on_invalid, make) for p in train]
    return streams, dev + train, describe


# ------------------------------------------------------------------------------- childes_age


def _childes_age_transcripts(path: Path, key: str):
    """data=childes_age: one document per transcript_id (its utterances joined in file order, in the
    order transcripts first appear), with the transcript's age_in_months. Rows are grouped across
    the whole file (the shuffled variant interleaves transcripts), so memory is about the file's size."""

    def make(segments: Iterator[str]) -> Iterator[tuple[str, float]]:
        rows = csv.reader(line + "\n" for line in iter_lines(segments))
        header = next(rows, None)
        if header is None:
            raise InputError(f"{key}: {path} is empty; expected a CSV with header {','.join(CHILDES_AGE_COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in CHILDES_AGE_COLUMNS if c not in header]
        if missing:
            raise InputError(
                f"{key}: {path} has no column {missing[0]!r} (its header is {header}); data=childes_age needs "
                f"a CSV with the columns {', '.join(CHILDES_AGE_COLUMNS)}"
            )
        i_text, i_id, i_age = (header.index(c) for c in CHILDES_AGE_COLUMNS)
        docs: dict[str, tuple[list[str], float]] = {}
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            line = rows.line_num
            if len(row) <= max(i_text, i_id, i_age):
                raise InputError(f"{key}: {path} line {line} has {len(row)} fields, the header {len(header)}")
            raw_age = row[i_age].strip()
            try:
                age = float(raw_age) if raw_age else math.nan
            except ValueError:
                raise InputError(f"{key}: {path} line {line}: age_in_months={raw_age!r} is not a number") from None
            tid = row[i_id].strip()
            texts, first = docs.setdefault(tid, ([], age))
            if not (age == first or (math.isnan(age) and math.isnan(first))):
                raise InputError(f"{key}: {path} line {line}: transcript {tid!r} has age {raw_age}, "
                                 f"but {first:g} on an earlier row; a transcript has one age")
            utterance = " ".join(row[i_text].split())
            if utterance:
                texts.append(utterance)
        for texts, age in docs.values():
            yield " ".join(texts), age

    return make


def _plan_childes_age(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    if not cfg.paths:
        raise InputError("data.paths is empty; pass data.paths=[FILE.csv,...] (text,transcript_id,age_in_months "
                         "columns) with data=childes_age")
    train = expand_paths(cfg.paths, "data.paths", (".csv",))
    dev = expand_paths(cfg.dev_paths, "data.dev_paths", (".csv",)) if cfg.dev_paths else []
    split = "train" if dev else "auto"
    streams = [_file_stream("childes", "dev", p, "data.dev_paths", on_invalid,
                            _childes_age_transcripts(p, "data.dev_paths")) for p in dev]
    streams += [_file_stream("childes", split, p, "data.paths", on_invalid,
                             _childes_age_transcripts(p, "data.paths")) for p in train]
    for s in streams:
        s.with_ages = True
    return streams, dev + train, f"data.paths={list(cfg.paths)}"
