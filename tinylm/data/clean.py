"""Per-source cleaning and deduplication of documents.

Cleaning works on one document at a time (a document is at most ~1.25 x data.doc_words words, see
tinylm.data.readers_common.DocumentCutter), so every pattern below is a bounded regular expression; the
one piece of state is the Project Gutenberg header/licence tracker, which spans documents.

    source (BabyLM domain)      option                       what it does
    childes                     data.childes_speakers        `*CHI:`, `*MOT:`, `*PAR1:` ... keep | strip
    childes                     data.childes_annotations     `[laughs]`, `[: word]`, `[MOT looks at CHI]` keep | strip
    switchboard                 data.switchboard_speakers    `A:` / `B:` turn labels keep | strip
    simple_wiki / wikipedia     data.wiki_headers            `= = = Title = = =` keep | strip | title (keep "Title")
    gutenberg                   data.gutenberg_boilerplate   PG START/END markers, licence, `End of Project
                                                             Gutenberg's ...`, `= = = PG123 = = =` book
                                                             separators, producer / HTML-version notes: keep | strip
    gutenberg                   data.gutenberg_italics       `_italics_` -> `italics`: keep | strip
    every source but text       data.normalize_whitespace    runs of whitespace -> one space

Deduplication (`Deduplicator`) removes exact duplicates (64-bit blake2b of the whitespace-normalised
text, kept in a set) and near duplicates: documents more than `threshold` of whose sampled word
n-gram shingles were already seen. A shingle's hash is a fixed polynomial (mod 2**64) of the
n-gram's UTF-8 bytes, mixed by splitmix64 (never Python's salted hash()), computed for all n-grams
at once from byte prefix sums; 1 in `sample` of them is kept (hash-sampled), and seen
shingles are bits in a fixed 2**bits-bit table: memory stays at 2**bits / 8 bytes whatever the
corpus size (128 MiB for the default 30 bits, a ~2% false-hit rate at 25M sampled shingles).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from tinylm.errors import InputError

# ----------------------------------------------------------------------------------- patterns

# Patterns start with a literal where possible (sre then scans for it fast); boundary checks
# come after it as lookbehinds, e.g. `\*(?<!\S\*)` = a `*` not preceded by a non-space.
CHILDES_SPEAKER = re.compile(r"\*(?<!\S\*)[A-Z][A-Za-z0-9]{1,7}:(?!\S)")
CHILDES_ANNOTATION = re.compile(r"\[[^\[\]\n]{1,200}\]")
SWITCHBOARD_SPEAKER = re.compile(r"[AB]:(?<!\S[AB]:)(?!\S)")
# "= = = Title = = =" (any level); the title may not contain " = ".
WIKI_HEADER = re.compile(r"=(?<!\S=)((?: =)*) ((?:(?!= )\S+ ){1,40}?)((?:= )*=)(?!\S)")
ITALICS = re.compile(r"_(?<![\w_]_)(?=\S)([^_\n]{1,300}?)(?<=\S)_(?![\w_])")
PG_START = re.compile(r"\*\*\*\s*START OF (?:THE |THIS )?PROJECT GUTENBERG E(?:-?BOOK|-?TEXT)[^*]{0,300}\*\*\*", re.IGNORECASE)
PG_END = re.compile(r"\*\*\*\s*END OF (?:THE |THIS )?PROJECT GUTENBERG E(?:-?BOOK|-?TEXT)[^*]{0,300}\*\*\*", re.IGNORECASE)
PG_BOOK_SEPARATOR = re.compile(r"= = = PG\d+ = = =(?!\S)")
PG_END_LINE = re.compile(r"End of (?:the )?Project Gutenberg(?:'s|’s)?\b[^=*]{0,300}?(?=\s*= = = PG\d+ = = =|\s*$)")
PG_HTML_NOTE = re.compile(
    r"Note: Project Gutenberg also has an HTML version of this file which includes the original "
    r"illustrations?\.(?: See \S+ or \S+(?: \(\S+\) or \(\S+\))?)?"
)
PG_PRODUCED_BY = re.compile(
    r"(?:Produced|E-text prepared|Etext prepared) by [^\[\]=]{0,250}?"
    r"Distributed Proofreading Team(?: at)?(?: \(?https?://[^\s)]*\)?)?"
)
# Each Gutenberg pattern runs only when its cheap marker is in the document.
_PG_INLINE = ((PG_END_LINE, "Project Gutenberg"), (PG_BOOK_SEPARATOR, "= = = PG"), (PG_HTML_NOTE, "Note: Project Gutenberg"),
              (PG_PRODUCED_BY, "Distributed Proofreading Team"))
# A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace.
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")

_KEEP_STRIP = ("keep", "strip")
OPTION_VALUES = {
    "childes_speakers": _KEEP_STRIP,
    "childes_annotations": _KEEP_STRIP,
    "switchboard_speakers": _KEEP_STRIP,
    "wiki_headers": ("keep", "strip", "title"),
    "gutenberg_boilerplate": _KEEP_STRIP,
    "gutenberg_italics": _KEEP_STRIP,
}
# BabyLM domain names (2023-2026 releases) -> the cleaner family that applies to them.
DOMAIN_FAMILY = {
    "childes": "childes", "aochildes": "childes",
    "switchboard": "switchboard",
    "simple_wiki": "wiki", "simple_wikipedia": "wiki", "wikipedia": "wiki", "enwiki": "wiki",
    "gutenberg": "gutenberg",
    "bnc_spoken": None, "open_subtitles": None, "cbt": None, "children_stories": None, "qed": None,
}


def validate_clean_options(cfg) -> None:
    for key, allowed in OPTION_VALUES.items():
        value = getattr(cfg, key)
        if value not in allowed:
            raise InputError(f"data.{key}={value!r} is not an option; use one of {', '.join(allowed)}")


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def strip_wiki_headers(text: str, mode: str) -> str:
    def repl(m: re.Match) -> str:
        if 1 + m.group(1).count("=") != m.group(3).count("="):
            return m.group(0)
        return "" if mode == "strip" else m.group(2).strip()

    return WIKI_HEADER.sub(repl, text) if "= " in text else text


class GutenbergCleaner:
    """Removes Project Gutenberg boilerplate from a stream of documents (stateful across them):
    everything before a `*** START OF ... ***` marker in the document that holds it, everything from
    an `*** END OF ... ***` marker to the next START marker (the licence; at most `max_skip_words`
    words, in case a join drops the next START), plus the inline end lines, book separators and
    producer / HTML-version notes of the BabyLM gutenberg files."""

    def __init__(self, strip_italics: bool, max_skip_words: int = 6000):
        self.strip_italics = strip_italics
        self.max_skip_words = max_skip_words
        self.skipping = False  # between an END marker and the next START marker
        self.skipped_words = 0

    def __call__(self, text: str) -> str:
        if not self.skipping and "***" not in text:
            return self._inline(text)
        out = []
        pos = 0
        while pos < len(text):
            if self.skipping:
                m = PG_START.search(text, pos)
                stop = m.end() if m else len(text)
                self.skipped_words += len(text[pos:stop].split())
                if m or self.skipped_words > self.max_skip_words:
                    self.skipping = False
                pos = stop
                continue
            start, end = PG_START.search(text, pos), PG_END.search(text, pos)
            if start and (not end or start.start() < end.start()):
                out = []  # the header before START, in this document, is boilerplate
                pos = start.end()
            elif end:
                out.append(text[pos : end.start()])
                self.skipping, self.skipped_words = True, 0
                pos = end.end()
            else:
                out.append(text[pos:])
                break
        return self._inline(" ".join(out))

    def _inline(self, text: str) -> str:
        for pattern, marker in _PG_INLINE:
            if marker in text:
                text = pattern.sub(" ", text)
        if self.strip_italics and "_" in text:
            text = ITALICS.sub(r"\1", text)
        return text


def make_cleaner(source: str, cfg, enabled: bool):
    """The cleaning function for documents of `source` (a BabyLM domain name or any other name);
    `enabled=False` (data=text, data=default) only strips the ends, as before."""
    if not enabled:
        return str.strip
    family = DOMAIN_FAMILY.get(source.lower())
    steps = []
    if family == "childes":
        if cfg.childes_annotations == "strip":
            steps.append(lambda t: CHILDES_ANNOTATION.sub(" ", t))
        if cfg.childes_speakers == "strip":
            steps.append(lambda t: CHILDES_SPEAKER.sub(" ", t))
    elif family == "switchboard" and cfg.switchboard_speakers == "strip":
        steps.append(lambda t: SWITCHBOARD_SPEAKER.sub(" ", t))
    elif family == "wiki" and cfg.wiki_headers != "keep":
        mode = cfg.wiki_headers
        steps.append(lambda t: strip_wiki_headers(t, mode))
    elif family == "gutenberg":
        if cfg.gutenberg_boilerplate == "strip":
            steps.append(GutenbergCleaner(strip_italics=cfg.gutenberg_italics == "strip"))
        elif cfg.gutenberg_italics == "strip":
            steps.append(lambda t: ITALICS.sub(r"\1", t))
    final = normalize_whitespace if cfg.normalize_whitespace else _one_line

    def clean(text: str) -> str:
        for step in steps:
            text = step(text)
        return final(text)

    return clean


def _one_line(text: str) -> str:
    """Documents are single lines in the spool: line breaks become spaces (no other change)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


# ----------------------------------------------------------------------------------- dedup

_POLY = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
_POLY_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))


def stable_hash64(data: bytes) -> int:
    """64-bit blake2b: the same on every machine and run (unlike the salted built-in hash())."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial shingle hashes over all 64 bits (wrapping uint64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class DedupStats:
    exact: int = 0
    near: int = 0
    exact_words: int = 0
    near_words: int = 0


@dataclass
class Deduplicator:
    """Exact + near-duplicate filter over a stream of documents (first occurrence wins)."""

    exact: bool = True
    near: bool = True
    ngram: int = 8
    threshold: float = 0.5
    sample: int = 4
    bits: int = 30
    stats: DedupStats = field(default_factory=DedupStats)

    def __post_init__(self):
        if self.ngram < 1 or self.sample < 1 or not 0 < self.threshold <= 1:
            raise InputError(
                f"near-duplicate settings ngram={self.ngram}, sample={self.sample}, threshold={self.threshold}: "
                "need data.near_dup_ngram >= 1, data.near_dup_sample >= 1 and 0 < data.near_dup_threshold <= 1"
            )
        self._seen_docs: set[int] = set()
        self._table = np.zeros(1 << (self.bits - 3), dtype=np.uint8) if self.near else None
        self._sample = np.uint64(self.sample)
        self._shift = np.uint64(64 - self.bits)
        self._p_pow = self._q_pow = np.ones(1, dtype=np.uint64)

    def _powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """P**k and P**-k (mod 2**64) for k < n, grown on demand."""
        if len(self._p_pow) < n:
            size = max(n, 2 * len(self._p_pow), 1 << 14)
            p = np.full(size, _POLY, dtype=np.uint64)
            p[0] = 1
            q = np.full(size, _POLY_INV, dtype=np.uint64)
            q[0] = 1
            self._p_pow, self._q_pow = np.cumprod(p, dtype=np.uint64), np.cumprod(q, dtype=np.uint64)
        return self._p_pow, self._q_pow

    def shingles(self, joined: bytes) -> np.ndarray:
        """Sampled hashes (uint64) of the word n-grams of `joined` (words separated by single
        spaces): a polynomial hash of each n-gram's bytes from byte prefix sums (vectorised, no
        per-word Python work), mixed by splitmix64; empty when the document is too short."""
        b = np.frombuffer(joined, dtype=np.uint8)
        spaces = np.flatnonzero(b == 32)
        m = len(spaces) + 1 - self.ngram + 1  # number of n-grams
        if m <= 0:
            return np.empty(0, dtype=np.uint64)
        length = len(b)
        p_pow, q_pow = self._powers(length + 1)
        prefix = np.zeros(length + 1, dtype=np.uint64)
        np.cumsum(b.astype(np.uint64) * q_pow[:length], out=prefix[1:])
        starts = np.concatenate(([0], spaces + 1))[:m]
        ends = np.concatenate((spaces, [length]))[self.ngram - 1 :]
        h = _mix64((prefix[ends] - prefix[starts]) * p_pow[ends - 1] + ends.astype(np.uint64) - starts.astype(np.uint64))
        return h[h % self._sample == 0]

    def is_duplicate(self, text: str, words: list[str]) -> bool:
        """True when `text` (whose str.split() is `words`) duplicates an earlier kept document;
        otherwise it is recorded as seen."""
        joined = " ".join(words).encode("utf-8", "surrogatepass")
        if self.exact:
            key = stable_hash64(joined)
            if key in self._seen_docs:
                self.stats.exact += 1
                self.stats.exact_words += len(words)
                return True
        if self.near:
            sh = self.shingles(joined)
            if len(sh):
                slot = sh >> self._shift
                byte, bit = (slot >> np.uint64(3)).astype(np.int64), (slot & np.uint64(7)).astype(np.uint8)
                hits = (self._table[byte] >> bit) & 1
                if hits.mean() > self.threshold:
                    self.stats.near += 1
                    self.stats.near_words += len(words)
                    return True
                np.bitwise_or.at(self._table, byte, np.left_shift(np.uint8(1), bit))
        if self.exact:
            self._seen_docs.add(key)
        return False
