"""Words per token, counted exactly as BabyLM counts words: `str.split()` on the document text.

The shards store, for every token, how many whitespace-separated words of the document start in it
(`<split>.words.bin`, uint8, aligned with `<split>.bin`), so a loader's words seen is the sum over
the targets it served, whatever the window, curriculum or epoch.

A word "starts in" the token that holds the first byte of its first character. Tokens and words do
not always line up with the pieces' "▁": sentencepiece's normalisation turns some characters that
`str.split()` keeps inside a word into a space (U+200B, zero-width space, starts a second piece word
in "a\u200bb") and drops others (U+001C, which `str.split()` treats as whitespace, or a word made only
of zero-width characters); a word of byte-fallback pieces may lack its own "▁" piece. So the exact
count reads the pieces' byte offsets: a word whose characters produced no token is counted at the
next token (the document's <eos> at the end). A document without such risky characters (and whose
"▁" pieces number its str.split() words) takes a fast path: there every "▁" piece starts one word.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\S+")  # \s of a str pattern is str.isspace(): the words of str.split()
MAX_PER_TOKEN = np.iinfo(np.uint8).max


@lru_cache(maxsize=1)
def _risky_characters() -> re.Pattern:
    """Characters where sentencepiece's normalisation and str.split() may disagree about word
    boundaries: whitespace other than space, tab, newline and carriage return; control and format
    characters (zero-width spaces and joiners, BOM, ...); characters whose NFKC form is empty or holds
    a space. A text without them has exactly one "▁" piece per word. (Built once per process.)"""
    risky = []
    # planes 0-2 and the tag / variation-selector block: the planes between and after hold no
    # assigned spaces, controls or compatibility characters
    for code in (*range(0x30000), *range(0xE0000, 0xE1000)):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        if c in " \t\n\r":
            continue
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            risky.append(code)
        elif unicodedata.decomposition(c).startswith("<"):  # only compatibility forms change under NFKC
            nfkc = unicodedata.normalize("NFKC", c)
            if not nfkc or any(x.isspace() for x in nfkc):
                risky.append(code)
    ranges, start = [], risky[0]
    for prev, code in zip(risky, risky[1:] + [None]):
        if code != prev + 1:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
            start = code
    return re.compile("[" + "".join(ranges) + "]")


def _encode_protos(sp, texts: list[str]):
    """sentencepiece pieces with byte offsets (the keyword changed between sentencepiece releases)."""
    try:
        return sp.encode(texts, return_type="proto")
    except TypeError:
        return sp.encode(texts, out_type="immutable_proto")


def piece_spans(sp, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
    """(ids, byte begins, byte ends) per text: each sentencepiece piece's byte offsets in the text."""
    return [([p.id for p in proto.pieces], [p.begin for p in proto.pieces], [p.end for p in proto.pieces])
            for proto in _encode_protos(sp, texts)]


def _offset_counts(text: str, proto, n_tokens: int) -> np.ndarray:
    """(n_tokens + 1,) words starting in each piece of `proto` (the encoding of `text`); the last
    slot holds words whose characters produced no token after the last piece."""
    pieces = list(proto.pieces)
    # zero-width pieces (a dummy "▁", the leading bytes of a multi-byte character) end where the
    # next piece with a width ends
    ends, next_end = [0] * len(pieces), None
    for i in range(len(pieces) - 1, -1, -1):
        p = pieces[i]
        ends[i] = p.end if p.end > p.begin or next_end is None else next_end
        if p.end > p.begin:
            next_end = p.end
    for i in range(1, len(ends)):  # non-decreasing for the search below
        ends[i] = max(ends[i], ends[i - 1])
    counts = np.zeros(n_tokens + 1, dtype=np.int64)
    byte, last = 0, 0
    for m in _WORD.finditer(text):
        byte += len(text[last : m.start()].encode("utf-8"))
        last = m.start()
        counts[bisect_right(ends, byte)] += 1  # the first piece that ends after the word's first byte
    return counts


def document_word_counts(sp, texts: list[str], encoded: list[list[int]], word_start: np.ndarray) -> list[np.ndarray]:
    """For each text (already encoded to `encoded` ids): (len(ids) + 1,) int64 words starting in
    each token, the last slot for words after the last token (counted at <eos>)."""
    out: list[np.ndarray | None] = [None] * len(texts)
    slow = []
    for i, (text, ids) in enumerate(zip(texts, encoded)):
        counts = np.zeros(len(ids) + 1, dtype=np.int64)
        counts[:-1] = word_start[np.asarray(ids, dtype=np.int64)] if ids else 0
        # the fast path, checked twice: no risky character, and the same total as str.split()
        if not _risky_characters().search(text) and int(counts.sum()) == len(_WORD.findall(text)):
            out[i] = counts
        else:
            slow.append(i)
    if slow:
        for i, proto in zip(slow, _encode_protos(sp, [texts[i] for i in slow])):
            out[i] = _offset_counts(texts[i], proto, len(encoded[i]))
    return out  # type: ignore[return-value]


def fit_uint8(counts: np.ndarray) -> np.ndarray:
    """A document's per-token counts as uint8 with the same total: a token past 255 words (only a
    run of 255+ words that produced no token of their own) passes the rest on to the next token,
    and from the last one back to earlier tokens."""
    counts = counts.astype(np.int64)
    if counts.size and counts.max() > MAX_PER_TOKEN:
        for order in (range(len(counts) - 1), range(len(counts) - 1, 0, -1)):
            for i in order:
                j = i + 1 if order.step == 1 else i - 1
                if counts[i] > MAX_PER_TOKEN:
                    counts[j] += counts[i] - MAX_PER_TOKEN
                    counts[i] = MAX_PER_TOKEN
    return counts.astype(np.uint8)
