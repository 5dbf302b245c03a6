"""The exported tokenizer of a byte-level run (`tokenizer=bytes`, tinylm.data.bytes): a
`tokenizers.Tokenizer` giving byte b the id b + 7, with tinylm's specials at 0..6.

It is built from the `tokenizers` library's own parts, so `AutoTokenizer` loads it as a plain
`PreTrainedTokenizerFast` (no remote code): the ByteLevel pre-tokenizer without its regex split and
without a prefix space maps every UTF-8 byte of the whole text to one printable stand-in character
(GPT-2's byte-to-unicode table), and a BPE model with exactly those 256 characters and no merges
gives each its id; the ByteLevel decoder maps the characters back to bytes and decodes UTF-8,
replacing invalid sequences with U+FFFD. So encode is exact for any text, and decode(encode(t)) == t.
Specials are never parsed from text (`split_special_tokens`), as the native tokenizer does not.
"""

from __future__ import annotations

from tinylm.data.bytes import BYTE_OFFSET, N_SPECIAL, SPECIAL_PIECES


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's table (the one tokenizers' ByteLevel uses): printable bytes stand for themselves,
    the others for the code points 256, 257, ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_byte_backend_tokenizer():
    """A `tokenizers.Tokenizer` that encodes exactly like tinylm.data.bytes.ByteTokenizer."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    vocab = {piece: i for i, piece in enumerate(SPECIAL_PIECES)}
    vocab.update({char: b + BYTE_OFFSET for b, char in byte_to_unicode().items()})
    assert len(vocab) == 256 + N_SPECIAL
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=SPECIAL_PIECES[1]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok
