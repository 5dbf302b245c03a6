"""words_seen counts words exactly as BabyLM does (str.split() on the document text), including words
made only of byte-fallback pieces, zero-width and other characters sentencepiece normalises away."""

import sys

import numpy as np
import pytest

from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.loader import TokenLoader, word_counts_of
from tinylm.data.words import _WORD, document_word_counts, fit_uint8

TRICKY = [
    "hello 😀 world",  # a word made only of byte-fallback pieces
    "a 中文 b 𝔘𝔫𝔦",
    "a\u200bb c",  # zero-width space inside a word: str.split() keeps one word, sentencepiece makes it a space
    "x \u200b y",  # a word made only of a zero-width space: sentencepiece drops it
    "x \u200c\u200d y \ufeffz",
    "a\x1cb\x1dc d",  # U+001C..U+001F: whitespace for str.split(), removed by sentencepiece
    "a\u3000b\u00a0c\u2028d\u0085e",  # other Unicode spaces
    "\u200b \u200b \u200b",  # words that produce no token at all
    "café naïve ﬁne Ⅻ ①",
    "plain ascii text, with\ttabs and\nnewlines",
    "",
]


def test_str_split_and_the_word_regex_agree_on_every_code_point():
    spaces = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    text = "a" + "a".join(spaces) + "a"
    assert [m.group() for m in _WORD.finditer(text)] == text.split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tinylm.data.pipeline import prepare_data

    folder = tmp_path_factory.mktemp("words")
    lines = [f"The little dog number {i} ran home and the cat sat on the mat." for i in range(300)]
    lines += TRICKY[:-1] * 3 + [" ".join(TRICKY) * 40]  # and one long document, encoded in pieces
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(kind="text", paths=[str(folder / "corpus.txt")], cache_dir=str(folder / "cache"))
    return prepare_data(cfg, TokenizerConfig(vocab_size=400, character_coverage=0.99))  # rare characters: byte fallback


def test_each_tricky_text_counts_its_str_split_words(data):
    tok = data.tokenizer
    table = tok.word_start_table()
    naive_wrong = 0
    for text in TRICKY:
        ids = tok.encode([text])[0]
        counts = document_word_counts(tok.sp, [text], [ids], table)[0]
        assert int(counts.sum()) == len(text.split()), text
        naive_wrong += int(table[ids].sum()) != len(text.split()) if ids else len(text.split()) != 0
    assert naive_wrong >= 3  # the piece-based count ("▁" pieces) gets these wrong


def test_the_shard_counts_every_document_exactly_and_the_loader_sums_them(data):
    shard = data.train
    counts = word_counts_of(shard, data.tokenizer.word_start_table())
    assert counts.dtype == np.uint8 and len(counts) == len(shard.tokens)
    starts = list(shard.docs[:, 0]) + [len(shard.tokens)]
    per_doc = [int(counts[a:b].sum()) for a, b in zip(starts, starts[1:])]
    assert per_doc == shard.docs[:, 1].tolist()  # the index's str.split() counts
    assert int(counts.sum()) == shard.words
    # one epoch of windows covers every target once: the loader's words are the shard's words minus
    # those at positions no window reaches as a target (position 0 and the ragged tail)
    loader = TokenLoader(shard.tokens, 16, 1, 0, counts)
    words = sum(loader.next_batch().words for _ in range(loader.n_windows))
    assert words == int(counts[1 : loader.n_windows * 16 + 1].sum())


def test_fit_uint8_keeps_the_total():
    c = np.array([0, 300, 0, 600])
    out = fit_uint8(c)
    assert out.dtype == np.uint8 and out.tolist() == [135, 255, 255, 255]  # 900 words kept, passed on and back
    assert int(fit_uint8(np.array([1000, 0, 0, 0, 0])).sum(dtype=np.int64)) == 1000
