"""prepare_data end to end: the data directory, its report, caching by content, rebuilds, atomic
builds, the `python -m tinylm.prepare_data` app, the download helpers, and the real BabyLM-like
corpus in ../shared (skipped when absent)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from helpers import ROOT, run_cli
from test_data_sources import BABYLM_LIKE, paragraph, write_babylm

from tinylm.config import DataConfig, TokenizerConfig
from tinylm.data.corpus import load_corpus
from tinylm.data.download import OfflineError, fetch, unpack_babylm_zip
from tinylm.data.pipeline import prepare_data
from tinylm.data.shards import DOC_COLUMNS, FEATURE_COLUMNS
from tinylm.data.tokenizer import BOS_ID, EOS_ID
from tinylm.errors import InputError

TOK = TokenizerConfig(vocab_size=320)


def files_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix in (".bin", ".npy", ".model")}


@pytest.fixture(scope="module")
def babylm_root(tmp_path_factory):
    return write_babylm(tmp_path_factory.mktemp("babylm") / "train_10M", words=4000)


def test_data_directory_report_and_index(babylm_root, tmp_path):
    cfg = DataConfig(kind="babylm", root=str(babylm_root), budget_words=6000, doc_words=150,
                     out_dir=str(tmp_path / "d"), keep_text=True)
    data = prepare_data(cfg, TOK, log=None)
    r = json.loads((tmp_path / "d" / "data_report.json").read_text())
    assert r["words_train"] == 6000 == sum(v["train"] for v in r["words_per_source"].values())
    assert r["words_total"] == r["words_train"] + r["words_dev"]
    assert set(r["words_per_source"]) == {"childes", "gutenberg", "simple_wiki", "switchboard"}
    assert r["documents"] == {"train": r["documents_train"], "dev": r["documents_dev"]}
    assert r["duplicates_removed"] == {"exact": 0, "near": 0, "words": 0} and r["invalid_utf8_replacements"] == 0
    for path, entry in r["input_files"].items():  # content hashes of every input
        assert entry["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert r["budget"]["mode"] == "proportional" and r["budget"]["selected_words"] == 6000
    assert r["stage"] == "complete" and r["tokens_train"] == len(data.train.tokens)
    # the tokenizer saw the budgeted train split only (read by the BabyLM compliance check)
    assert r["tokenizer_training"] == {"split": "train", "words": 6000, "corpus_key": r["corpus_key"],
                                       "documents_sampled_every": 1}
    # the shard index: starts at <bos>, words per document, source ids, token spans, difficulty features
    docs = data.train.docs
    assert docs.shape[1] == len(DOC_COLUMNS) and (data.train.tokens[docs[:, 0]] == BOS_ID).all()
    assert (data.train.tokens[docs[:, 0] + docs[:, 3] - 1] == EOS_ID).all()
    assert docs[:, 1].sum() == 6000 and data.train.sources == sorted(r["words_per_source"])
    assert data.train.features.shape == (len(docs), len(FEATURE_COLUMNS)) and np.isfinite(data.train.features).all()
    assert (data.train.features[:, 0] > 0).all()
    texts = (tmp_path / "d" / "train.txt").read_text().splitlines()
    assert sum(len(t.split()) for t in texts) == 6000 and len(texts) == len(docs)
    assert data.tokenizer.vocab_size == 320 and data.train.tokens.dtype == np.uint16


def test_identical_inputs_identical_bytes_and_rebuild_on_change(tmp_path):
    root = write_babylm(tmp_path / "b", domains=("childes", "bnc_spoken"), words=3000)
    cfg = dict(kind="babylm", root=str(root), doc_words=150, cache_dir=str(tmp_path / "cache"))
    a = prepare_data(DataConfig(**cfg), TOK, log=None)
    b = prepare_data(DataConfig(**cfg, out_dir=str(tmp_path / "other")), TOK, log=None)
    assert files_digest(a.shard_dir) == files_digest(b.shard_dir) and len(files_digest(a.shard_dir)) == 9  # with train/dev.words.bin
    mtime = (a.shard_dir / "train.bin").stat().st_mtime_ns
    assert prepare_data(DataConfig(**cfg), TOK, log=None).shard_dir == a.shard_dir  # cached, not rebuilt
    assert (a.shard_dir / "train.bin").stat().st_mtime_ns == mtime
    # same size, same mtime, one changed byte in the middle: a different key and a rebuild
    path = root / "childes.train"
    raw, stat = bytearray(path.read_bytes()), path.stat()
    raw[len(raw) // 2] = ord("Z") if raw[len(raw) // 2] != ord("Z") else ord("Y")
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    c = prepare_data(DataConfig(**cfg), TOK, log=None)
    assert c.shard_dir != a.shard_dir and c.report["corpus_key"] != a.report["corpus_key"]
    # with a fixed out_dir the folder is rebuilt in place
    d = prepare_data(DataConfig(**cfg, out_dir=str(tmp_path / "other")), TOK, log=None)
    assert d.shard_dir == b.shard_dir and d.report["data_key"] == c.report["data_key"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_inputs_leave_nothing_behind(babylm_root, tmp_path):
    out = tmp_path / "d"
    with pytest.raises(InputError, match=r"data.budget_words=999,999,999 is larger than the corpus"):
        prepare_data(DataConfig(kind="babylm", root=str(babylm_root), budget_words=999_999_999, out_dir=str(out)),
                     TOK, log=None)
    with pytest.raises(InputError, match="tokenizer.vocab_size=90000 does not fit"):
        prepare_data(DataConfig(kind="babylm", root=str(babylm_root), out_dir=str(out)),
                     TokenizerConfig(vocab_size=90000), log=None)
    assert list(tmp_path.iterdir()) == []  # no out_dir, no temporary folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"data.out_dir=.*mine exists and is not a tinylm data directory"):
        prepare_data(DataConfig(kind="babylm", root=str(babylm_root), out_dir=str(tmp_path / "mine")), TOK, log=None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_tokenizer_only_then_full_build_reuses_the_tokenizer(babylm_root, tmp_path):
    cfg = DataConfig(kind="babylm", root=str(babylm_root), budget_words=3000, out_dir=str(tmp_path / "d"))
    first = prepare_data(cfg, TOK, tokenizer_only=True, log=None)
    assert first.train is None and first.report["stage"] == "tokenizer"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["data_report.json", "tokenizer.model"]
    model = (tmp_path / "d" / "tokenizer.model").read_bytes()
    full = prepare_data(cfg, TOK, log=None)
    assert full.report["stage"] == "complete" and (tmp_path / "d" / "tokenizer.model").read_bytes() == model
    assert full.report["tokenizer_sha256"] == first.report["tokenizer_sha256"]


def test_unigram_tokenizer_is_deterministic_too(babylm_root, tmp_path):
    tok = TokenizerConfig(model_type="unigram", vocab_size=320)
    cfg = dict(kind="babylm", root=str(babylm_root), budget_words=4000, doc_words=150)
    a = prepare_data(DataConfig(**cfg, out_dir=str(tmp_path / "a")), tok, log=None)
    b = prepare_data(DataConfig(**cfg, out_dir=str(tmp_path / "b")), tok, log=None)
    assert files_digest(a.shard_dir) == files_digest(b.shard_dir)
    assert a.tokenizer.sp.id_to_piece(4) == "<mask>" and a.report["vocab_size"] == 320


def test_prepare_data_app_and_its_errors(babylm_root, tmp_path):
    out = tmp_path / "d"
    result = run_cli("tinylm.prepare_data", "data=babylm", f"data.root={babylm_root}", "data.budget_words=2500",
                     f"data.out_dir={out}", "tokenizer.vocab_size=300", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"data directory: {out}"
    assert json.loads((out / "data_report.json").read_text())["words_train"] == 2500
    result = run_cli("tinylm.prepare_data", "data=babylm", f"data.root={babylm_root}", "data.domains=[childes,cbt]",
                     f"data.out_dir={tmp_path / 'e'}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data.domains: unknown domain 'cbt'; {babylm_root} has childes, gutenberg, simple_wiki, switchboard"]
    assert not (tmp_path / "e").exists()


def test_download_helpers_offline_message_and_unpack(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(OfflineError, match=r"^cannot download https://x/y.zip \(\[Errno -2\].*\); no network\? do it by hand$"):
        fetch("https://x/y.zip", tmp_path / "y.zip", manual_hint="do it by hand")
    assert list(tmp_path.iterdir()) == []
    archive = tmp_path / "train_10M.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train_10M/childes.train", "*CHI: hi .\n")
        z.writestr("train_10M/gutenberg.train", paragraph(50, 1) + "\n")
        z.writestr("__MACOSX/train_10M/._childes.train", "junk")
        z.writestr("dev/childes.dev", "*MOT: bye .\n")
        z.writestr("README.md", "readme")
    placed = unpack_babylm_zip(archive, tmp_path / "babylm")
    assert placed == {"dev": ["childes.dev"], "train_10M": ["childes.train", "gutenberg.train"]}
    assert sorted(p.name for p in (tmp_path / "babylm" / "train_10M").iterdir()) == [
        "SHA256SUMS", "childes.train", "gutenberg.train"]
    assert (tmp_path / "babylm" / "dev" / "childes.dev").read_text() == "*MOT: bye .\n"
    train, dev = load_corpus(DataConfig(kind="babylm", root=str(tmp_path / "babylm" / "train_10M")))
    assert [d.source for d in dev] == ["childes"] and {d.source for d in train} == {"childes", "gutenberg"}


def test_download_scripts_print_one_line_offline(tmp_path):
    for script in ("download_babylm.py", "download_tinystories.py"):
        result = subprocess.run([sys.executable, str(ROOT / "data_prep" / script), "--out", str(tmp_path / script),
                                 "--timeout", "5"], capture_output=True, text=True, timeout=60,
                                env={"PATH": "", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                                     "HF_HUB_OFFLINE": "1"})
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot download https://"), lines
        assert not [p for p in (tmp_path / script).rglob("*") if p.is_file()]


@pytest.mark.skipif(not BABYLM_LIKE.is_dir(), reason="../shared/corpora/babylm_like is absent")
def test_babylm_like_with_a_200k_word_budget(tmp_path):
    cfg = DataConfig(kind="babylm", root=str(BABYLM_LIKE), budget_words=200_000, out_dir=str(tmp_path / "d"))
    data = prepare_data(cfg, TokenizerConfig(vocab_size=2048), log=None)
    r = data.report
    assert r["words_train"] == 200_000 and data.train.docs[:, 1].sum() == 200_000
    assert set(r["words_per_source"]) == {"bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki",
                                          "switchboard"}
    # proportional: each domain's share of the budget is its share of the (deduplicated) train words
    avail = r["budget"]["available_per_source"]
    for name, words in r["words_per_source"].items():
        assert abs(words["train"] - 200_000 * avail[name] / sum(avail.values())) < 1
    assert 299_000 < r["words_dev"] <= 300_000  # the dev/ files (minus Gutenberg boilerplate)
    assert r["duplicates_removed"]["near"] >= 1 and r["invalid_utf8_replacements"] == 0
    assert len(r["input_files"]) == 12 and r["unigram_dev_loss"] < np.log(2048)
