import math

import numpy as np
import pytest
import torch

from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.corpus import Document, count_words, load_corpus, split_train_dev
from tinylm.data.loader import TokenLoader, fixed_windows
from tinylm.data.pipeline import prepare_data, unigram_cross_entropy
from tinylm.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, train_tokenizer
from tinylm.errors import InputError

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran to the park and saw a red ball .",
    "where is the ball ? the ball is under the bed .",
    "mia likes apples , but tom likes bananas .",
    "the little bird sang a happy song in the morning .",
]


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = [" ".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), size=4)) for _ in range(400)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_word_count_is_whitespace_split():
    assert count_words("  Hello,  world!\tHow are\nyou? ") == 5
    assert count_words("") == 0
    assert count_words("don't stop-me now") == 3


def test_split_is_deterministic_and_by_document():
    docs = [Document(f"doc {i}", "s") for i in range(100)]
    train, dev = split_train_dev(docs, 0.1)
    assert len(dev) == 10 and len(train) == 90
    assert set(d.text for d in train).isdisjoint(d.text for d in dev)
    assert split_train_dev(docs, 0.1) == (train, dev)


def test_tokenizer_round_trip_and_specials(text_corpus, cache_dir):
    train, _ = load_corpus(DataConfig(kind="text", paths=[str(text_corpus)], cache_dir=str(cache_dir)))
    tok = train_tokenizer([d.text for d in train], TokenizerConfig(vocab_size=300), cache_dir, "hash-a")
    for text in SENTENCES + ["Zebras jump! ünïcödé 🙂"]:  # unseen characters: byte fallback
        ids = tok.encode([text])[0]
        assert tok.decode(ids) == text
    assert tok.sp.id_to_piece(BOS_ID) == "<s>" and tok.sp.id_to_piece(EOS_ID) == "</s>"
    assert tok.sp.id_to_piece(MASK_ID) == "<mask>"
    # cached: a second call returns the same model file without retraining
    again = train_tokenizer([d.text for d in train], TokenizerConfig(vocab_size=300), cache_dir, "hash-a")
    assert again.model_file == tok.model_file


def test_word_start_table_counts_words_exactly(text_corpus, cache_dir):
    train, _ = load_corpus(DataConfig(kind="text", paths=[str(text_corpus)], cache_dir=str(cache_dir)))
    tok = train_tokenizer([d.text for d in train], TokenizerConfig(vocab_size=300), cache_dir, "hash-a")
    table = tok.word_start_table()
    for text in SENTENCES:
        assert int(table[tok.encode([text])[0]].sum()) == count_words(text)


def test_shards_equal_direct_tokenization(text_corpus, tmp_path):
    """The pipeline's shards hold exactly <bos> + sentencepiece ids + <eos> of each train document
    (keep_text writes the documents it tokenized), and a rebuild reuses the folder untouched."""
    cfg = DataConfig(kind="text", paths=[str(text_corpus)], out_dir=str(tmp_path / "d"), keep_text=True)
    data = prepare_data(cfg, TokenizerConfig(vocab_size=300))
    docs = (tmp_path / "d" / "train.txt").read_text().splitlines()
    expected = [t for d in docs for t in [BOS_ID, *data.tokenizer.encode([d])[0], EOS_ID]]
    assert data.train.tokens.dtype == np.uint16
    assert data.train.tokens.tolist() == expected
    assert data.train.words == sum(count_words(d) for d in docs)
    starts = data.train.docs[:, 0]
    assert (data.train.tokens[starts] == BOS_ID).all() and len(starts) == len(docs)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "d").iterdir()}
    prepare_data(cfg, TokenizerConfig(vocab_size=300))  # identical inputs: the cached folder is reused
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "d").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unigram_cross_entropy_by_hand():
    train = np.array([0, 0, 1, 2])  # add-one counts over vocab 4: [3, 2, 2, 1] / 8
    dev = np.array([9, 0, 3])  # the first token is never a target
    expected = -(math.log(3 / 8) + math.log(1 / 8)) / 2
    assert unigram_cross_entropy(train, dev, 4) == pytest.approx(expected)


def _loader(tokens, seed=3):
    return TokenLoader(tokens, seq_len=8, batch_size=4, seed=seed, word_counts=(tokens % 3 == 0).astype(np.uint8))


def test_loader_epoch_covers_every_window_once_and_counts_words():
    tokens = np.arange(8 * 20 + 1, dtype=np.uint16) % 50
    loader = _loader(tokens)
    seen, words = [], 0
    for _ in range(5):  # 20 windows / 4 per batch = one epoch
        b = loader.next_batch()
        torch.testing.assert_close(b.input_ids[:, 1:], b.targets[:, :-1])
        seen += [int(r[0]) for r in b.input_ids]
        words += b.words
    assert sorted(seen) == sorted(int(tokens[i * 8]) for i in range(20))
    assert words == int((tokens[1:] % 3 == 0).sum())  # every target token exactly once
    assert loader.epoch == 0 and loader.next_batch() is not None and loader.epoch == 1


def test_loader_state_resumes_to_the_same_batches():
    tokens = np.random.default_rng(0).integers(0, 50, size=1001).astype(np.uint16)
    a = _loader(tokens)
    for _ in range(37):  # crosses epoch boundaries (31 windows -> 7 batches per epoch)
        a.next_batch()
    b = _loader(tokens)
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.input_ids, y.input_ids) and x.words == y.words
    with pytest.raises(ValueError, match="does not match"):
        _loader(tokens, seed=4).load_state_dict(a.state_dict())


def test_fixed_windows_are_deterministic():
    tokens = np.arange(1000, dtype=np.uint16)
    a = fixed_windows(tokens, 16, n_batches=3, batch_size=4)
    assert len(a) == 3 and a[0].shape == (4, 17)
    assert all(torch.equal(x, y) for x, y in zip(a, fixed_windows(tokens, 16, 3, 4)))


def test_prepare_data_reports_words_and_baseline(text_corpus, cache_dir):
    data = prepare_data(DataConfig(kind="text", paths=[str(text_corpus)], cache_dir=str(cache_dir)),
                        TokenizerConfig(vocab_size=300))
    r = data.report
    lines = (text_corpus / "train.txt").read_text().splitlines()
    assert r["words_train"] + r["words_dev"] == sum(count_words(s) for s in lines)
    assert r["documents_dev"] == 20 and r["tokens_train"] == len(data.train.tokens)
    assert 0 < r["unigram_dev_loss"] < math.log(300)


def test_bad_corpus_inputs(tmp_path, cache_dir):
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "missing.txt")]))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InputError, match="holds 0 document"):
        load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "empty.txt")]))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\nencore\n".encode("latin1"))
    with pytest.raises(InputError, match=r"latin1.txt is not valid UTF-8 \(byte 3\)"):
        load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "latin1.txt")]))
    (tmp_path / "small.txt").write_text("a b c\nd e f\n")
    with pytest.raises(InputError, match="tokenizer.vocab_size=5000 does not fit"):
        prepare_data(DataConfig(kind="text", paths=[str(tmp_path / "small.txt")], cache_dir=str(cache_dir)),
                     TokenizerConfig(vocab_size=5000))
    assert not list((cache_dir / "tokenizers").glob("*.tmp"))  # the failed training left nothing behind
