"""sentencepiece tokenizer: training on the train split only (a BabyLM rule), cached by content.

Special tokens have fixed ids in every tinylm tokenizer, so models and objectives can rely on them.
`tokenizer=bytes` (tinylm.data.bytes.ByteTokenizer) keeps them and maps byte b to id b + 7;
`load_tokenizer` opens either kind from a `tokenizer.model` file.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import sentencepiece as spm

from tinylm.config import TokenizerConfig
from tinylm.errors import InputError
from tinylm.utils import atomic_dir, sha256_of

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Symbols the models need beyond pad/unk/bos/eos; user-defined, so "<mask>" in text maps to it.
EXTRA_SPECIALS = ("<mask>", "<cls>", "<sep>")
MASK_ID, CLS_ID, SEP_ID = 4, 5, 6

# sentencepiece skips training sentences longer than this many bytes; long documents are cut.
_MAX_SENTENCE_BYTES = 16384


def load_tokenizer(model_file: str | Path):
    """The tokenizer a `tokenizer.model` file holds: a sentencepiece model or a byte tokenizer spec."""
    from tinylm.data.bytes import ByteTokenizer, is_byte_tokenizer_file

    return ByteTokenizer(model_file) if is_byte_tokenizer_file(model_file) else Tokenizer(model_file)


class Tokenizer:
    """A thin wrapper over a sentencepiece model with tinylm's fixed special ids."""

    kind = "sentencepiece"

    def __init__(self, model_file: str | Path):
        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
        self.vocab_size = self.sp.get_piece_size()

    pad_id, unk_id, bos_id, eos_id, mask_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=os.cpu_count() or 1)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def piece_spans(self, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, begin, end) per text: each piece's byte offsets in the text (sentencepiece's)."""
        from tinylm.data.words import piece_spans

        return piece_spans(self.sp, texts)

    def word_counts(self, texts: list[str], encoded: list[list[int]]) -> list[np.ndarray]:
        """Per text, (len(ids) + 1,) words (str.split()) starting in each token: tinylm.data.words."""
        from tinylm.data.words import document_word_counts

        if not hasattr(self, "_word_start"):
            self._word_start = self.word_start_table()
        return document_word_counts(self.sp, texts, encoded, self._word_start)

    def word_start_table(self) -> np.ndarray:
        """(V,) bool: pieces that begin a whitespace-separated word ("▁..."), so words seen can be
        counted exactly from token ids. Byte pieces and specials never start a word."""
        return np.array(
            [self.sp.id_to_piece(i).startswith("\u2581") and not self.sp.is_control(i) for i in range(self.vocab_size)],
            dtype=bool,
        )


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
    """Lines of `texts`, long ones cut at a space below sentencepiece's byte limit (nothing is
    silently dropped). Positions, not slices of the rest, so a 50 MB line costs linear time."""
    limit = _MAX_SENTENCE_BYTES // 4
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            pos, n = 0, len(line)
            while pos < n:
                end = pos + limit
                if end < n:
                    space = line.rfind(" ", pos, end)
                    if space > pos:
                        end = space
                else:
                    end = n
                yield line[pos:end]
                pos = end
                while pos < n and line[pos].isspace():
                    pos += 1


def train_sentencepiece(texts: Iterable[str], cfg: TokenizerConfig, out_file: Path) -> None:
    """Train a sentencepiece model on `texts` (streamed) and write it to `out_file`.

    The model is written through `model_writer`, so its bytes do not depend on the output path: the
    same texts and options give an identical file. Beyond tokenizer.max_sentences sentences,
    sentencepiece samples with its generator seeded to 0 (not the clock); prepare_data caps the text
    at tokenizer.max_train_chars before that, by a stable hash of the document index."""
    if cfg.model_type not in ("bpe", "unigram"):
        raise InputError(f"tokenizer.model_type={cfg.model_type!r} is not supported; use bpe, unigram or bytes")
    writer = io.BytesIO()
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(0)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(texts),
            model_writer=writer,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            byte_fallback=cfg.byte_fallback,
            character_coverage=cfg.character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            user_defined_symbols=list(EXTRA_SPECIALS),
            input_sentence_size=cfg.max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=_MAX_SENTENCE_BYTES,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        # sentencepiece says e.g. "Vocabulary size too high (4096). Please set it to a value <= 3599."
        found = re.search(r"Vocabulary size (too high|is smaller than required_chars)[^\n]*", str(e))
        if found:
            raise InputError(
                f"tokenizer.vocab_size={cfg.vocab_size} does not fit this corpus ({found.group(0).strip()}); "
                "choose a tokenizer.vocab_size in that range"
            ) from None
        raise
    out_file.write_bytes(writer.getvalue())


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, cache_dir: str | Path, corpus_hash: str) -> Tokenizer:
    """Train (or load from the cache) a tokenizer on `texts`, keyed by the corpus hash and options."""
    key = sha256_of("tokenizer-v1", corpus_hash, asdict(cfg))[:16]
    final = Path(cache_dir) / "tokenizers" / key
    if (final / "tokenizer.model").exists():
        return Tokenizer(final / "tokenizer.model")
    with atomic_dir(final) as tmp:
        train_sentencepiece(texts, cfg, tmp / "tokenizer.model")
    return Tokenizer(final / "tokenizer.model")
