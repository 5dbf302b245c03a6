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

Files are read in binary blocks: every byte goes through sha256 (the content hash is compared
with the one taken before the build, so a file edited mid-build is caught), and UTF-8 is decoded
strictly (`data.on_invalid_utf8=error`: an InputError naming the file and byte offset) or with
each invalid sequence replaced by U+FFFD and counted (`replace`).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.errors import InputError

BLOCK_BYTES = 1 << 20  # read size; a segment handed on never exceeds ~2 blocks
EOT = "<|endoftext|>"
KINDS = ("default", "text", "babylm", "tinystories", "jsonl", "hf", "childes_age")
CHILDES_AGE_COLUMNS = ("text", "transcript_id", "age_in_months")
BABYLM_DOMAINS = ("bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki", "switchboard")
TINYSTORIES_TRAIN = ("train.txt", "TinyStoriesV2-GPT4-train.txt", "TinyStories-train.txt")
TINYSTORIES_DEV = ("valid.txt", "TinyStoriesV2-GPT4-valid.txt", "TinyStories-valid.txt")


# ---------------------------------------------------------------------------------- reading


@dataclass
class FileStats:
    path: str
    bytes: int = 0
    sha256: str = ""
    invalid_utf8: int = 0  # invalid byte sequences replaced by U+FFFD


_COUNTER: list[int] = [0]


def _count_and_replace(exc: UnicodeDecodeError):
    _COUNTER[0] += 1
    return "\ufffd", exc.end


codecs.register_error("tinylm-count-replace", _count_and_replace)


def _decode(data: bytes, offset: int, stats: FileStats, key: str, on_invalid: str) -> str:
    if on_invalid == "error":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            path = Path(stats.path)
            raise InputError(
                f"{key}: {path} is not valid UTF-8 (byte {offset + e.start}); re-encode it, "
                f"e.g. `iconv -f latin1 -t utf-8 {path.name}`, or set data.on_invalid_utf8=replace"
            ) from None
    before = _COUNTER[0]
    text = data.decode("utf-8", "tinylm-count-replace")
    stats.invalid_utf8 += _COUNTER[0] - before
    return text


def _cut_point(data: bytes) -> int:
    """Where to end a segment inside a long line: after the last space/tab, else before the last
    (possibly incomplete) UTF-8 character (only a single word longer than a block is split)."""
    cut = max(data.rfind(b" "), data.rfind(b"\t"))
    if cut > 0:
        return cut + 1
    i = len(data)
    while i > 0 and 0x80 <= data[i - 1] < 0xC0:  # continuation bytes
        i -= 1
    if i > 0 and data[i - 1] >= 0xC0:  # the lead byte of the last character
        i -= 1
    return i if i > 0 else len(data)


def read_segments(path: Path, stats: FileStats, key: str, on_invalid: str) -> Iterator[str]:
    """Decoded text of `path` in pieces that end after a newline or at whitespace (never inside a
    UTF-8 sequence); memory stays at a few blocks whatever the line lengths. Fills `stats`."""
    h = hashlib.sha256()
    carry, offset, first = b"", 0, True
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            if block:
                h.update(block)
                stats.bytes += len(block)
            data = carry + block
            if not block:  # end of file
                end = len(data)
            else:
                end = data.rfind(b"\n") + 1
                if end == 0:
                    end = _cut_point(data) if len(data) >= BLOCK_BYTES else 0
            if end:
                text = _decode(data[:end], offset, stats, key, on_invalid)
                if first:
                    text, first = text.removeprefix("\ufeff"), False
                offset += end
                carry = data[end:]
                if text:
                    yield text
            else:
                carry = data
            if not block:
                break
    stats.sha256 = h.hexdigest()


def iter_lines(segments: Iterator[str]) -> Iterator[str]:
    """Complete lines (without "\\n") from read_segments' pieces."""
    pending: list[str] = []
    for seg in segments:
        parts = seg.split("\n")
        if len(parts) == 1:
            pending.append(parts[0])
            continue
        pending.append(parts[0])
        yield "".join(pending)
        yield from parts[1:-1]
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield "".join(pending)


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------- document cutting


def _words_pattern(k: int) -> re.Pattern | None:
    """Matches (leading whitespace and) k words; None for k = 0."""
    return re.compile(rf"\s*\S+(?:\s+\S+){{{k - 1}}}") if k > 0 else None


class DocumentCutter:
    """Cuts a stream of text into documents of about `doc_words` words, deterministically and
    independently of how the stream is chunked.

    A document starting at s ends at the cut point nearest (in words) to its doc_words-th word,
    looked for between its 0.75 x and 1.25 x doc_words-th words: a line end if there is one there
    (short lines are thereby grouped whole), else a sentence end, else exactly after the
    doc_words-th word. A cut is made only once 1.25 x doc_words words are buffered (or the record
    has ended), so the result never depends on read sizes. What remains at the end of a record is
    its last document.
    """

    def __init__(self, doc_words: int):
        if doc_words < 1:
            raise InputError(f"data.doc_words={doc_words} must be at least 1")
        n = doc_words
        self.lo, self.n, self.hi = max(1, (3 * n) // 4), n, max(n + 1, (5 * n + 3) // 4)
        self._to_lo = _words_pattern(self.lo)
        self._lo_to_n = _words_pattern(self.n - self.lo)
        self._n_to_hi = _words_pattern(self.hi - self.n)
        self.buf, self.start = "", 0

    def _advance(self, pattern, pos: int) -> int | None:
        if pattern is None:
            return pos
        m = pattern.match(self.buf, pos)
        # The last word matched must be complete: followed by whitespace (greedy \S+).
        return m.end() if m and m.end() < len(self.buf) else None

    def _cut(self) -> int | None:
        s = self.start
        p_lo = self._advance(self._to_lo, s)
        p_n = self._advance(self._lo_to_n, p_lo) if p_lo is not None else None
        p_hi = self._advance(self._n_to_hi, p_n) if p_n is not None else None
        if p_hi is None:
            return None  # fewer than hi complete words buffered
        buf = self.buf
        before, after = buf.rfind("\n", p_lo, p_n), buf.find("\n", p_n, p_hi)
        if before < 0 and after < 0:
            ends = [m.end() for m in _SENT_END.finditer(buf, p_lo, p_hi)]
            before = max((e for e in ends if e <= p_n), default=-1)
            after = min((e for e in ends if e > p_n), default=-1)
        if before < 0 and after < 0:
            return p_n
        if before < 0:
            return after
        if after < 0:
            return before
        return before if len(buf[before:p_n].split()) <= len(buf[p_n:after].split()) else after

    def feed(self, text: str) -> list[str]:
        if self.start > (len(self.buf) >> 1):
            self.buf, self.start = self.buf[self.start :], 0
        self.buf += text
        docs = []
        while (cut := self._cut()) is not None:
            docs.append(self.buf[self.start : cut])
            self.start = cut
        return docs

    def finish(self) -> list[str]:
        """End of a record: what is buffered becomes documents (the last may be short)."""
        docs = []
        self.buf += " "  # completes the last word for _advance
        while (cut := self._cut()) is not None:
            docs.append(self.buf[self.start : cut])
            self.start = cut
        rest = self.buf[self.start :]
        if rest.strip():
            docs.append(rest)
        self.buf, self.start = "", 0
        return docs


_SENT_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")


# ----------------------------------------------------------------------------------- streams


@dataclass
class Stream:
    source: str  # source name (BabyLM domain, file stem, "tinystories", dataset name)
    split: str  # train | dev | auto (split by document, see corpus.assign_splits)
    label: str  # what messages name: a path or a dataset
    documents: Callable[[], Iterator[str]]  # raw documents, in order
    group: str = ""  # documents of one group share one every-k-th dev split (default: the source)
    files: list[FileStats] = field(default_factory=list)  # filled while streaming
    with_ages: bool = False  # documents() yields (text, age in months, NaN unknown) pairs


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


def expand_paths(paths: list[str], key: str, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Files named directly, plus every regular file (sorted) inside named folders (only those
    ending in one of `suffixes` when given)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise InputError(f"{key}: {raw} does not exist; point it at a UTF-8 text file or a folder of them")
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if suffixes:
                inside = [f for f in inside if f.name.endswith(suffixes)]
            if not inside:
                what = "files" if not suffixes else " / ".join(suffixes) + " files"
                raise InputError(f"{key}: folder {raw} has no {what}; add some or choose another folder")
            files.extend(inside)
        else:
            files.append(p)
    return files


def _file_stream(source, split, path: Path, key, on_invalid, make_docs, group="") -> Stream:
    stream = Stream(source, split, str(path), lambda: iter(()), group or source)

    def documents() -> Iterator[str]:
        stats = FileStats(str(path))
        stream.files.append(stats)
        yield from make_docs(read_segments(path, stats, key, on_invalid))

    stream.documents = documents
    return stream


def _lines_as_documents(segments: Iterator[str]) -> Iterator[str]:
    """data=text: one document per non-empty line, as str.splitlines() sees lines."""
    for line in iter_lines(segments):
        for piece in line.splitlines():
            if piece.strip():
                yield piece


def _cut_stream(doc_words: int):
    def make(segments: Iterator[str]) -> Iterator[str]:
        cutter = DocumentCutter(doc_words)
        for seg in segments:
            yield from cutter.feed(seg)
        yield from cutter.finish()

    return make


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


def _jsonl_records(path: Path, field_name: str, doc_words: int):
    def make(segments: Iterator[str]) -> Iterator[str]:
        for n, line in enumerate(iter_lines(segments), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"data.paths: {path} line {n} is not JSON ({e.msg}); fix the line or remove it") from None
            if not isinstance(record, dict) or field_name not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise InputError(
                    f"data.paths: {path} line {n} has no field {field_name!r} (it has {keys}); "
                    "set data.text_field to the field that holds the text"
                )
            text = record[field_name]
            if text is None:
                continue
            if not isinstance(text, str):
                raise InputError(f"data.paths: {path} line {n}: field {field_name!r} is {type(text).__name__}, not text")
            cutter = DocumentCutter(doc_words)
            yield from cutter.feed(text)
            yield from cutter.finish()

    return make


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


def _babylm_domain(path: Path) -> str | None:
    for suffix in (".train", ".train.txt"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _plan_babylm(cfg, on_invalid) -> tuple[list[Stream], list[Path], str, list[str]]:
    if not cfg.root:
        raise InputError(
            "data.root is empty; pass data.root=FOLDER (a BabyLM train_10M / train_100M folder of "
            "<domain>.train files), e.g. after `python data_prep/download_babylm.py --out data/babylm`"
        )
    root = Path(cfg.root).expanduser()
    describe = f"data.root={cfg.root}"
    if not root.is_dir():
        raise InputError(
            f"data.root: {cfg.root} does not exist or is not a folder; download the corpus with "
            "`python data_prep/download_babylm.py --out data/babylm` or point data.root at a folder of <domain>.train files"
        )
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


def _plan_tinystories(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    make = _stories(cfg.doc_words)
    if cfg.paths:
        train = expand_paths(cfg.paths, "data.paths")
        dev = expand_paths(cfg.dev_paths, "data.dev_paths") if cfg.dev_paths else []
        describe = f"data.paths={list(cfg.paths)}"
    else:
        if not cfg.root:
            raise InputError(
                "data.root is empty; pass data.root=FOLDER with TinyStories train/valid files (or data.paths=[...]), "
                "e.g. after `python data_prep/download_tinystories.py --out data/tinystories`"
            )
        root = Path(cfg.root).expanduser()
        describe = f"data.root={cfg.root}"
        if not root.is_dir():
            raise InputError(
                f"data.root: {cfg.root} does not exist or is not a folder; download TinyStories with "
                "`python data_prep/download_tinystories.py --out data/tinystories`"
            )
        train = [p for name in TINYSTORIES_TRAIN if (p := root / name).is_file()][:1]
        dev = [p for name in TINYSTORIES_DEV if (p := root / name).is_file()][:1]
        if not train:
            raise InputError(f"data.root: {root} has none of {', '.join(TINYSTORIES_TRAIN)}; point it at a TinyStories folder")
    split = "train" if dev else "auto"
    streams = [_file_stream("tinystories", "dev", p, "data.dev_paths", on_invalid, make) for p in dev]
    streams += [_file_stream("tinystories", split, p, "data.paths", on_invalid, make) for p in train]
    return streams, dev + train, describe


def _plan_jsonl(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    if not cfg.paths:
        raise InputError("data.paths is empty; pass data.paths=[FILE.jsonl_OR_FOLDER,...] with data=jsonl")
    suffixes = (".jsonl", ".json", ".ndjson")
    train = expand_paths(cfg.paths, "data.paths", suffixes)
    dev = expand_paths(cfg.dev_paths, "data.dev_paths", suffixes) if cfg.dev_paths else []
    streams = [_file_stream(p.stem, "dev", p, "data.dev_paths", on_invalid,
                            _jsonl_records(p, cfg.text_field, cfg.doc_words), group="dev") for p in dev]
    split = "train" if dev else "auto"
    streams += [_file_stream(p.stem, split, p, "data.paths", on_invalid,
                             _jsonl_records(p, cfg.text_field, cfg.doc_words)) for p in train]
    return streams, dev + train, f"data.paths={list(cfg.paths)}"


def load_hf_split(cfg, split: str):
    """datasets.load_dataset(data.hf_name, data.hf_config, data_files=..., split=...), imported
    here only: the rest of tinylm never needs `datasets`."""
    try:
        import datasets
    except ImportError:
        raise InputError("data=hf needs the `datasets` package: pip install 'tinylm[data]'") from None
    kwargs = {"split": split}
    if cfg.hf_data_files:
        kwargs["data_files"] = list(cfg.hf_data_files)
    args = [cfg.hf_name] + ([cfg.hf_config] if cfg.hf_config else [])
    try:
        ds = datasets.load_dataset(*args, **kwargs)
    except FileNotFoundError as e:
        raise InputError(f"data.hf_name={cfg.hf_name!r}: {e}".splitlines()[0]) from None
    except Exception as e:  # offline hub, unknown split, bad files: one clear line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"data.hf_name={cfg.hf_name!r} (split {split!r}) could not be loaded: {first}; check the name, "
            "data.hf_split / data.hf_data_files, and the network (hub datasets need it the first time)"
        ) from None
    if cfg.text_field not in ds.column_names:
        raise InputError(
            f"data.text_field={cfg.text_field!r} is not a column of {cfg.hf_name!r} (columns: {ds.column_names}); "
            "set data.text_field"
        )
    return ds


def _plan_hf(cfg) -> tuple[list[Stream], dict, str]:
    if not cfg.hf_name:
        raise InputError("data.hf_name is empty; pass a dataset name (e.g. roneneldan/TinyStories) or a builder "
                         "(text, json, parquet, csv) with data.hf_data_files=[...]")
    train = load_hf_split(cfg, cfg.hf_split)
    dev = load_hf_split(cfg, cfg.hf_dev_split) if cfg.hf_dev_split else None
    name = cfg.hf_name.rstrip("/").split("/")[-1] or "hf"

    def rows(ds):
        def make() -> Iterator[str]:
            for batch in ds.iter(batch_size=1024):  # columnar batches: no dict per row
                for text in batch[cfg.text_field]:
                    if not text:
                        continue
                    cutter = DocumentCutter(cfg.doc_words)
                    yield from cutter.feed(str(text))
                    yield from cutter.finish()

        return make

    streams: list[Stream] = []
    if dev is not None:
        streams.append(Stream(name, "dev", f"{cfg.hf_name}[{cfg.hf_dev_split}]", rows(dev)))
    streams.append(Stream(name, "train" if dev is not None else "auto", f"{cfg.hf_name}[{cfg.hf_split}]", rows(train)))
    fingerprint = {"hf_train": getattr(train, "_fingerprint", None), "hf_dev": getattr(dev, "_fingerprint", None)}
    if fingerprint["hf_train"] is None:
        raise InputError(f"data.hf_name={cfg.hf_name!r}: the dataset has no fingerprint to cache it by")
    return streams, fingerprint, f"data.hf_name={cfg.hf_name}"


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
        extra = {"default_corpus": hash_file(Path(default_corpus.__file__)),
                 "words": cfg.default_words, "seed": cfg.default_seed}
        describe = "the default corpus"
    elif cfg.kind == "text":
        if not cfg.paths:
            raise InputError("data.paths is empty; pass data.paths=[FILE_OR_FOLDER,...] with data=text")
        train = expand_paths(cfg.paths, "data.paths")
        dev = expand_paths(cfg.dev_paths, "data.dev_paths") if cfg.dev_paths else []
        split = "train" if dev else "auto"
        streams = [_file_stream(p.stem, "dev", p, "data.dev_paths", on_invalid, _lines_as_documents, group="all")
                   for p in dev]
        streams += [_file_stream(p.stem, split, p, "data.paths", on_invalid, _lines_as_documents, group="all")
                    for p in train]
        inputs = dev + train
        describe = f"data.paths={list(cfg.paths)}"
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
        files[str(p)] = {"bytes": p.stat().st_size, "sha256": hash_file(p)}
    return {"files": files, **plan.fingerprint_extra}
