"""Byte-level tokenization (`tokenizer=bytes`): no trained tokenizer, a text is its UTF-8 bytes.

Layout: tinylm's seven special ids stay where every other tinylm tokenizer has them (pad=0 unk=1
bos=2 eos=3 <mask>=4 <cls>=5 <sep>=6) and byte b is id b + 7, so the vocabulary holds 263 ids.

Why not ByT5's 259 (pad=0 eos=1 unk=2, byte b -> b + 3): the models, the masking (MLM and GPT-BERT
need <mask>), the evaluation (which prepends <bos>), the shards (<bos> ... <eos> per document), the
vocabulary curriculum and the export all rely on the fixed special ids 0..6 (tinylm.data.tokenizer).
Moving them for one tokenizer would put an `if bytes` into each of those places; four more rows
cost nothing. So the trade-off the small-LM papers argue about (a 256-symbol alphabet, about 4-5x
longer sequences than an 8k BPE) is measured with everything else unchanged.

The run's `tokenizer.model` is then a small JSON file naming this layout (not a sentencepiece
model), so a run directory stays self-contained and its tokenizer has a sha256 like any other.
Specials are never parsed from text: "<mask>" in a document is its six bytes, as sentencepiece
(with tinylm's settings) does not parse them either. Decoding drops special ids and replaces
invalid UTF-8 (a cut multi-byte character) with U+FFFD.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

N_SPECIAL = 7  # pad, unk, bos, eos, <mask>, <cls>, <sep>: ids 0..6, as in every tinylm tokenizer
BYTE_OFFSET = N_SPECIAL  # byte b has id b + BYTE_OFFSET
VOCAB_SIZE = 256 + N_SPECIAL
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>", "<mask>", "<cls>", "<sep>")  # sentencepiece's names
# The whole content of a byte tokenizer's `tokenizer.model`: fixed bytes, so a fixed sha256.
SPEC = {"tinylm_tokenizer": "bytes", "version": 1, "byte_offset": BYTE_OFFSET, "vocab_size": VOCAB_SIZE,
        "specials": list(SPECIAL_PIECES)}
SPEC_BYTES = (json.dumps(SPEC, sort_keys=True) + "\n").encode()

_WORD = re.compile(r"\S+")  # the words of str.split() (as tinylm.data.words)


def is_byte_tokenizer_file(path: str | Path) -> bool:
    """True when `path` holds a byte tokenizer spec (a sentencepiece model is a binary protobuf)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    return head.startswith(b"{") and b'"tinylm_tokenizer": "bytes"' in head


def write_byte_tokenizer(path: str | Path) -> None:
    Path(path).write_bytes(SPEC_BYTES)


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (never in cleaned text) still has 3 bytes, as _byte_lengths says
    return text.encode("utf-8", errors="surrogatepass")


def _byte_lengths(text: str) -> np.ndarray:
    """(len(text),) UTF-8 bytes of each character, vectorised over the code points."""
    cp = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
    return 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)


class ByteTokenizer:
    """tinylm.data.tokenizer.Tokenizer's interface for UTF-8 bytes (see the module docstring)."""

    kind = "bytes"
    vocab_size = VOCAB_SIZE
    pad_id, unk_id, bos_id, eos_id, mask_id = 0, 1, 2, 3, 4

    def __init__(self, model_file: str | Path):
        self.model_file = Path(model_file)
        spec = json.loads(self.model_file.read_text())
        if spec.get("byte_offset") != BYTE_OFFSET or spec.get("vocab_size") != VOCAB_SIZE:
            raise ValueError(f"{model_file}: byte tokenizer layout {spec} is not tinylm's {SPEC}")

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [(np.frombuffer(_utf8(t), dtype=np.uint8).astype(np.int64) + BYTE_OFFSET).tolist() for t in texts]

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < VOCAB_SIZE)
        return data.decode("utf-8", errors="replace")

    def id_to_piece(self, i: int) -> str:
        return SPECIAL_PIECES[i] if i < N_SPECIAL else f"<0x{i - BYTE_OFFSET:02X}>"

    def piece_spans(self, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, begin, end) per text: byte offsets of each token in the text's UTF-8 (one byte each)."""
        out = []
        for ids in self.encode(texts):
            n = len(ids)
            out.append((ids, list(range(n)), list(range(1, n + 1))))
        return out

    def word_start_table(self) -> np.ndarray:
        """(V,) False: whether a byte starts a word depends on the byte before it, never on the id
        alone. Words seen come from the shards' exact per-token counts (word_counts below)."""
        return np.zeros(VOCAB_SIZE, dtype=bool)

    def word_counts(self, texts: list[str], encoded: list[list[int]]) -> list[np.ndarray]:
        """For each text: (len(ids) + 1,) int64 words (str.split()) starting in each token, i.e. at
        the first byte of each word's first character; the last slot (words after the last token)
        stays 0, as every character has bytes."""
        out = []
        for text, ids in zip(texts, encoded):
            counts = np.zeros(len(ids) + 1, dtype=np.int64)
            starts = np.fromiter((m.start() for m in _WORD.finditer(text)), dtype=np.int64)
            if len(starts) and not text.isascii():
                byte_at = np.concatenate([[0], np.cumsum(_byte_lengths(text))])
                starts = byte_at[starts]
            np.add.at(counts, starts, 1)
            out.append(counts)
        return out
