"""Shared plumbing of the corpus readers (tinylm.data.readers_files, tinylm.data.readers_babylm):
files are read in binary blocks (`read_segments`), every byte goes through sha256 (the content
hash is compared with the one taken before the build, so a file edited mid-build is caught), and
UTF-8 is decoded strictly (`data.on_invalid_utf8=error`: an InputError naming the file and byte
offset) or with each invalid sequence replaced by U+FFFD and counted (`replace`); `iter_lines`
turns the pieces into lines, `DocumentCutter` cuts long text into documents of about
data.doc_words words, and `Stream` / `expand_paths` / `_file_stream` are what every per-kind
planner builds its streams from. The registry that picks a reader per data.kind is
tinylm.data.sources.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.errors import InputError

BLOCK_BYTES = 1 << 20  # read size; a segment handed on never exceeds ~2 blocks


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


def iter_lines(segments: Iterator[str], max_chars: int = 0) -> Iterator[str]:
    """Complete lines (without "\\n") from read_segments' pieces. max_chars > 0: a longer line comes
    out in pieces of about that size, cut where read_segments cut it (at whitespace), so memory
    stays bounded whatever one line holds."""
    pending: list[str] = []
    pending_chars = 0
    for seg in segments:
        parts = seg.split("\n")
        if len(parts) == 1:
            pending.append(parts[0])
            pending_chars += len(parts[0])
            if max_chars and pending_chars >= max_chars:
                yield "".join(pending)
                pending, pending_chars = [], 0
            continue
        pending_chars = len(parts[-1])
        pending.append(parts[0])
        yield "".join(pending)
        yield from parts[1:-1]
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield "".join(pending)


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
