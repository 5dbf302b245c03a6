"""tokenizer=bytes: ids by hand (tinylm's specials 0..6, byte b -> b + 7), exact words per token,
scored spans, and a tiny byte-level run of every family through training, evaluation, generation
and the HF export, whose tokenizer gives the native ids and decodes back exactly."""

import json

import numpy as np
import pytest
import torch
from helpers import full_and_resumed, smoke_config

from tinylm.data.bytes import SPEC_BYTES, VOCAB_SIZE, ByteTokenizer, write_byte_tokenizer
from tinylm.errors import InputError

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer  # noqa: E402

TEXTS = ["Hi", "é", "a\u200bb", "😀", "<mask>", "", " x"]
# by hand: UTF-8 bytes + 7 ("H"=0x48, "i"=0x69; é = C3 A9; ZWSP = E2 80 8B; 😀 = F0 9F 98 80; "<"=0x3C ...)
IDS = [[0x48 + 7, 0x69 + 7], [0xC3 + 7, 0xA9 + 7], [0x61 + 7, 0xE2 + 7, 0x80 + 7, 0x8B + 7, 0x62 + 7],
       [0xF0 + 7, 0x9F + 7, 0x98 + 7, 0x80 + 7], [0x3C + 7, 0x6D + 7, 0x61 + 7, 0x73 + 7, 0x6B + 7, 0x3E + 7], [],
       [0x20 + 7, 0x78 + 7]]


@pytest.fixture(scope="module")
def byte_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "tokenizer.model"
    write_byte_tokenizer(path)
    return ByteTokenizer(path)


def test_byte_ids_by_hand(byte_tok):
    from tinylm.data.tokenizer import load_tokenizer

    assert VOCAB_SIZE == 263 and byte_tok.vocab_size == 263
    assert byte_tok.encode(TEXTS) == IDS
    assert [byte_tok.decode(ids) for ids in IDS] == TEXTS
    assert byte_tok.decode([2, 0x48 + 7, 4, 3, 0]) == "H"  # specials are dropped
    assert byte_tok.decode([0xC3 + 7]) == "\ufffd"  # a cut multi-byte character
    assert byte_tok.decode([0x61 + 7, 0xF0 + 7, 0x9F + 7, 0x62 + 7]) == "a\ufffdb"
    assert byte_tok.id_to_piece(4) == "<mask>" and byte_tok.id_to_piece(0x41 + 7) == "<0x41>"
    assert isinstance(load_tokenizer(byte_tok.model_file), ByteTokenizer)
    assert byte_tok.model_file.read_bytes() == SPEC_BYTES


def test_words_start_at_the_first_byte_of_each_str_split_word(byte_tok):
    cases = {
        "naïve café": [0, 7],  # n a ï(2) v e ' ' = 7 bytes before "café"
        "a\u200bb c": [0, 6],  # zero-width space is not whitespace for str.split(): "a\u200bb" is one word
        "\u3000x\u00a0y": [3, 6],  # ideographic space (3 bytes) and no-break space (2) are whitespace
        "\x1cword": [1],  # U+001C splits words too (sentencepiece drops it)
        "\u200b": [0],  # a word made only of a zero-width character
        "  ": [],
    }
    texts = list(cases)
    for text, counts in zip(texts, byte_tok.word_counts(texts, byte_tok.encode(texts))):
        assert len(counts) == len(text.encode()) + 1
        assert np.flatnonzero(counts).tolist() == cases[text] and counts.max(initial=0) <= 1
        assert int(counts.sum()) == len(text.split())


def test_scored_bytes_are_those_of_the_candidate(byte_tok):
    from tinylm.eval.scoring import encode_scored

    (ids, scored), = encode_scored(byte_tok, "Box é ", ["the"])
    assert ids == byte_tok.encode(["Box é the"])[0] and scored == [False] * 7 + [True] * 3


def test_an_unknown_model_type_is_refused(tmp_path):
    from tinylm.config import TokenizerConfig
    from tinylm.data.tokenizer import train_sentencepiece

    with pytest.raises(InputError, match="bpe, unigram or bytes"):
        train_sentencepiece(["a b c"], TokenizerConfig(model_type="chars"), tmp_path / "t.model")


# --------------------------------------------------------------------------------------------------
# a byte-level run end to end

PAIRS = [("The dog runs.", "The dog run."), ("Who did you see?", "Who did you see him?"), ("Zoë is here.", "Zoë are here.")]


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory, cache_dir):
    from tinylm.train.loop import pretrain

    run = tmp_path_factory.mktemp("bytes-run") / "run"
    summary = pretrain(smoke_config(run, cache_dir, "tokenizer=bytes", "train.steps=8", "train.threads=1"))
    return run, summary


def test_a_byte_run_prepares_trains_and_counts_words_exactly(byte_run):
    from tinylm.train.metrics import read_metrics

    run, summary = byte_run
    assert (run / "tokenizer.model").read_bytes() == SPEC_BYTES
    report = json.loads((run / "data_report.json").read_text())
    assert report["vocab_size"] == 263 and report["options"]["tokenizer"]["model_type"] == "bytes"
    words = np.fromfile(f"{report['shards']}/train.words.bin", dtype=np.uint8)
    assert int(words.sum(dtype=np.int64)) == report["words_train"]
    tokens = np.fromfile(f"{report['shards']}/train.bin", dtype=np.uint16)
    assert tokens.max() < 263 and report["tokens_train"] == len(tokens)
    assert summary["final_dev_loss"] < np.log(263)  # learned something beyond uniform bytes
    rows = [r for r in read_metrics(run) if "loss" in r]
    assert rows[-1]["words_seen"] == summary["words_seen"] > 0


def test_a_byte_run_evaluates_and_generates(byte_run, tmp_path):
    from tinylm.eval.config import EvalConfig
    from tinylm.eval.run import evaluate, score_files
    from tinylm.eval.formats import read_tasks
    from tinylm.generate import GenerateConfig, generate
    from tinylm.train.checkpoint import load_trained

    run, _ = byte_run
    task = tmp_path / "tasks" / "mini.jsonl"
    task.parent.mkdir()
    task.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, "UID": "mini", "field": "syntax",
                                        "linguistics_term": "agreement"}) + "\n" for g, b in PAIRS))
    cfg = EvalConfig(ckpt=str(run), tasks=str(task.parent), out=str(tmp_path / "ev"), batch_size=4)
    res = evaluate(cfg)
    model, tok, _ = load_trained(run)
    # the reference: the sum of log p of every byte after <bos>, by hand from the model's logits (float64)
    want = []
    for pair in PAIRS:
        item = []
        for text in pair:
            ids = torch.tensor([[2, *[b + 7 for b in text.encode()]]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids)[0].double(), -1)
            item.append(float(logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()))
        want.append(item)
    files, _ = read_tasks(str(task.parent), 0)
    scores, _ = score_files(model, tok, "causal", files, cfg, 64, torch.device("cpu"))
    got = next(iter(scores.values()))
    assert np.allclose(got, want, atol=1e-4, rtol=0)
    assert res["scorer"] == "causal"
    assert res["files"]["mini.jsonl"]["accuracy"] == pytest.approx(sum(g > b for g, b in want) / len(want))
    assert "perplexity" in res["dev"]
    # generation decodes bytes back to text (invalid UTF-8 replaced, never an exception)
    assert res["samples"] and all(isinstance(s["continuation"], str) for s in res["samples"])
    texts = generate(GenerateConfig(ckpt=str(run), prompt="Zoë ran", n=3, max_new_tokens=24, temperature=1.0))
    assert len(texts) == 3 and all(t.startswith("Zoë ran") for t in texts)
    with pytest.raises(InputError, match="pll_word"):
        evaluate(EvalConfig(ckpt=str(run), tasks=str(task.parent), out=str(tmp_path / "ev2"), scorer="pll_word"))


# --------------------------------------------------------------------------------------------------
# the HF export: a plain fast tokenizer with the native ids, decoding back exactly


@pytest.fixture(scope="module")
def byte_export(byte_run):
    from tinylm.export.hf import export_hf

    run, _ = byte_run
    return export_hf(run, run / "hf", check=True)  # its own check: ids on PARITY_TEXTS, logits vs the native model


def test_the_exported_tokenizer_gives_the_native_ids_and_decodes_exactly(byte_export, byte_tok):
    from tinylm.export.hf import PARITY_TEXTS

    assert not (byte_export / "sentencepiece.model").exists()
    assert json.loads((byte_export / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    tok = AutoTokenizer.from_pretrained(str(byte_export), trust_remote_code=True)
    texts = PARITY_TEXTS + TEXTS + ["  Two  spaces,\ttabs\nand <mask> here <sep>.  ", "\x00\x7f\u00ff\U0010ffff", "x" * 300]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == byte_tok.encode([text])[0], text
        assert tok.decode(ids) == text  # exact, whitespace and all
    assert tok("Hi")["input_ids"] == [2, 0x48 + 7, 0x69 + 7]  # <bos> in front (a causal model)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 3, 4)
    assert len(tok) == 263


def test_pieces_decoded_one_at_a_time_re_encode_to_the_same_ids(byte_export):
    """The BabyLM reading task decodes pieces one at a time and re-encodes the joined text (issue #9,
    10c): every ASCII byte decodes to its character alone; a byte of a multi-byte character is not
    text on its own (U+FFFD, as a lone byte-fallback piece), and the whole word decodes exactly."""
    tok = AutoTokenizer.from_pretrained(str(byte_export), trust_remote_code=True)
    words = ["She", "wound", "up", "uptake", "naïve", "Zoë", "a\u200bb", "😀!", "don't", "x\ty"]
    checked = 0
    for text in words + [" ".join(words)]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = [tok.decode([i]) for i in ids]
        assert [p == "\ufffd" for p in pieces] == [i - 7 >= 0x80 for i in ids], text
        assert tok.decode(ids) == text
        if not text.isascii():
            continue
        joined = "".join(pieces)
        assert joined == text and tok(joined, add_special_tokens=False)["input_ids"] == ids
        checked += 1
    assert checked == 6  # the ASCII words


FAMILIES = {"bert_mlm": ("model=bert_tiny", "objective=mlm"), "bert_hybrid": ("model=bert_tiny", "objective=hybrid"),
            "mlstm": ("model=mlstm_tiny",)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_evaluates_and_exports_with_bytes(family, tmp_path, cache_dir):
    from tinylm.eval.config import EvalConfig
    from tinylm.eval.run import evaluate
    from tinylm.export.hf import export_hf
    from tinylm.train.loop import pretrain

    run = tmp_path / "run"
    summary = pretrain(smoke_config(run, cache_dir, "tokenizer=bytes", "train.steps=2", "train.threads=1",
                                    "train.milestones=false", *FAMILIES[family]))
    assert np.isfinite(summary["final_dev_loss"]) and summary["words_seen"] > 0
    task = tmp_path / "tasks" / "mini.jsonl"
    task.parent.mkdir()
    task.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b, "UID": "mini", "field": "syntax", "linguistics_term": "agreement"}) + "\n" for g, b in PAIRS))
    res = evaluate(EvalConfig(ckpt=str(run), tasks=str(task.parent), out=str(tmp_path / "ev"), samples=False))
    assert res["scorer"] == {"bert_mlm": "pll", "bert_hybrid": "mntp", "mlstm": "causal"}[family]
    assert res["files"]["mini.jsonl"]["items"] == 3 and res["files"]["mini.jsonl"]["nonfinite"] == 0
    out = export_hf(run, run / "hf", check=True)  # ids and every head's logits vs the native model
    checks = json.loads((out / "tinylm_export.json").read_text())["checks"]
    assert checks["max_abs_logit_diff"] < 1e-4
    tok = AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    masked = family.startswith("bert")
    assert tok("é")["input_ids"] == [2, 0xC3 + 7, 0xA9 + 7, *([3] if masked else [])]


def test_a_byte_run_resumes_bit_exact(tmp_path, cache_dir, monkeypatch):
    overrides = ("tokenizer=bytes", "train.steps=6", "train.ckpt_every=3", "train.log_every=1", "train.eval_every=3",
                 "train.milestones=false")
    _, _, a, b = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=3)
    assert a == b and len(a) >= 6
