"""Corpus sources: each reader on small fixtures written here, the document cutter, word counts,
invalid UTF-8, and bad inputs. (The fixture writers at the top are shared by the other
test_data_*.py files.)"""

from __future__ import annotations

import json
import random
import resource
from pathlib import Path

import pytest

from tinylm.config import DataConfig
from tinylm.data import readers_common, readers_files
from tinylm.data.corpus import build_corpus, count_words, load_corpus
from tinylm.data.readers_common import DocumentCutter, FileStats, read_segments
from tinylm.data.sources import plan_sources
from tinylm.errors import InputError

WORDS = ["the", "a", "little", "big", "red", "blue", "dog", "cat", "bird", "fish", "ball", "tree", "house", "car", "boat", "sun", "moon", "star", "girl", "boy", "mom", "dad", "runs", "jumps", "sees", "likes", "wants", "finds", "eats", "plays", "sings", "reads", "quickly", "slowly", "happily", "today", "again", "here", "there", "under", "over", "near", "with", "and", "but", "then", "so", "very", "good", "bad", "old", "new", "small", "tall", "green", "yellow"]
REPO = Path(__file__).resolve().parent.parent
BABYLM_LIKE = REPO.parent / "shared" / "corpora" / "babylm_like"


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 11))) + " ."


def paragraph(n_words: int, seed: int) -> str:
    """At least n_words words of random sentences (distinct for distinct seeds)."""
    rng = random.Random(seed)
    out, count = [], 0
    while count < n_words:
        out.append(sentence(rng))
        count += len(out[-1].split())
    return " ".join(out)


def write_babylm(root: Path, domains=("childes", "gutenberg", "simple_wiki", "switchboard"), words=3000,
                 dev=True, seed=0) -> Path:
    """A BabyLM-layout folder: long one-line blocks for most domains, one turn per line for
    switchboard, dev files in dev/ (as in shared/corpora/babylm_like), a .test file to ignore."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev").mkdir(exist_ok=True)
    for i, d in enumerate(domains):
        if d == "switchboard":
            rng = random.Random(seed * 100 + i)
            text = "\n".join(f"{'AB'[k % 2]}:\t{sentence(rng)}" for k in range(words // 8)) + "\n"
        else:
            text = "\n".join(paragraph(words // 2, seed * 100 + 10 * i + j) for j in range(2)) + "\n"
        (root / f"{d}.train").write_text(text)
        if dev:
            (root / "dev" / f"{d}.dev").write_text(paragraph(400, seed * 100 + 10 * i + 9) + "\n")
        (root / f"{d}.test").write_text("never read\n")
    return root


def corpus_docs(cfg: DataConfig, tmp_path: Path):
    plan = plan_sources(cfg)
    index = build_corpus(cfg, plan, tmp_path / "spool")
    lines = (tmp_path / "spool").read_text().splitlines()
    return plan, index, lines


# ------------------------------------------------------------------------------ word counts


def test_word_counts_are_str_split_by_hand():
    assert count_words("*CHI:\tmore  cookie .\n*MOT: no !") == 7
    assert count_words("don't\u00a0stop") == 2  # a no-break space separates words for str.split
    assert count_words("caf\u00e9\u3000ol\u00e9") == 2  # so does an ideographic space
    assert count_words(" \t\n") == 0


# ---------------------------------------------------------------------------- the cutter


def test_cutter_cuts_long_lines_at_sentence_ends_near_doc_words():
    text = paragraph(5000, 1)
    docs = DocumentCutter(100).feed(text + " ")
    cutter = DocumentCutter(100)
    docs = cutter.feed(text) + cutter.finish()
    assert "".join(docs).split() == text.split()  # nothing lost, nothing added
    for d in docs[:-1]:
        assert 75 <= count_words(d) <= 125, count_words(d)
        assert d.rstrip().endswith(".")  # cut at a sentence end


def test_cutter_groups_short_lines_and_cuts_at_line_ends():
    rng = random.Random(2)
    lines = [sentence(rng) for _ in range(400)]
    cutter = DocumentCutter(60)
    docs = cutter.feed("\n".join(lines) + "\n") + cutter.finish()
    assert [w for d in docs for w in d.split()] == " ".join(lines).split()
    for d in docs[:-1]:
        assert 45 <= count_words(d) <= 75
        assert d.endswith(".") and d.strip() in "\n".join(lines)  # whole lines only


def test_cutter_without_punctuation_cuts_at_exactly_doc_words():
    cutter = DocumentCutter(50)
    docs = cutter.feed(" ".join(f"w{i}" for i in range(500))) + cutter.finish()
    assert [count_words(d) for d in docs] == [50] * 10


def test_documents_do_not_depend_on_read_size(tmp_path, monkeypatch):
    root = write_babylm(tmp_path / "b", words=4000)
    cfg = DataConfig(kind="babylm", root=str(root), doc_words=120)
    _, _, big = corpus_docs(cfg, tmp_path)
    monkeypatch.setattr(readers_common, "BLOCK_BYTES", 97)  # segments end mid-line everywhere
    _, _, small = corpus_docs(cfg, tmp_path)
    assert big == small and len(big) > 20


# ------------------------------------------------------------------------------ babylm


def test_babylm_layout_domains_dev_folder_and_counts(tmp_path):
    root = write_babylm(tmp_path / "b", words=3000)
    cfg = DataConfig(kind="babylm", root=str(root), doc_words=200)
    plan, index, lines = corpus_docs(cfg, tmp_path)
    assert [(s.source, s.split) for s in plan.streams] == [
        (d, split) for d in ("childes", "gutenberg", "simple_wiki", "switchboard") for split in ("dev", "train")]
    assert sorted(Path(p).name for p in plan.ignored) == sorted(f"{d}.test" for d in
                                                                ("childes", "gutenberg", "simple_wiki", "switchboard"))
    # exact word counts: every word of every file is in some document (no cleaning changes them here)
    files = [root / f"{d}.train" for d in index.sources] + [root / "dev" / f"{d}.dev" for d in index.sources]
    assert int(index.words.sum()) == sum(count_words(f.read_text()) for f in files)
    assert [count_words(x) for x in lines] == index.words.tolist()
    assert all("\n" not in x for x in lines)


def test_babylm_dev_in_parent_dev_folder_and_domain_subset(tmp_path):
    root = write_babylm(tmp_path / "text_data" / "train_10M", dev=False)
    (tmp_path / "text_data" / "dev").mkdir()
    (tmp_path / "text_data" / "dev" / "childes.dev").write_text(paragraph(300, 5) + "\n")
    plan = plan_sources(DataConfig(kind="babylm", root=str(root), domains=["switchboard", "childes"]))
    assert [(s.source, s.split) for s in plan.streams] == [("switchboard", "auto"), ("childes", "dev"), ("childes", "train")]


def test_babylm_bad_inputs_name_the_input(tmp_path):
    with pytest.raises(InputError, match="data.root is empty"):
        plan_sources(DataConfig(kind="babylm"))
    with pytest.raises(InputError, match=r"data.root: .*nope does not exist .*download_babylm.py"):
        plan_sources(DataConfig(kind="babylm", root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no <domain>.train files"):
        plan_sources(DataConfig(kind="babylm", root=str(tmp_path / "empty")))
    (tmp_path / "text_data" / "train_10M").mkdir(parents=True)
    (tmp_path / "text_data" / "train_10M" / "childes.train").write_text("hi\n")
    with pytest.raises(InputError, match=r"it has train_10M: point data.root at one of them"):
        plan_sources(DataConfig(kind="babylm", root=str(tmp_path / "text_data")))
    root = write_babylm(tmp_path / "b", domains=("childes", "gutenberg"))
    with pytest.raises(InputError, match=r"data.domains: unknown domain 'wikipedia'; .* has childes, gutenberg"):
        plan_sources(DataConfig(kind="babylm", root=str(root), domains=["childes", "wikipedia"]))
    with pytest.raises(InputError, match=r"data.kind='babyLM' is not a corpus kind"):
        plan_sources(DataConfig(kind="babyLM"))
    (root / "gutenberg.train").write_text("")
    (root / "dev" / "gutenberg.dev").write_text("\n\n")
    with pytest.raises(InputError, match=r"source 'gutenberg' \(.*gutenberg.dev, .*gutenberg.train\) has no text"):
        load_corpus(DataConfig(kind="babylm", root=str(root)))


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    root = write_babylm(tmp_path / "b", domains=("childes", "open_subtitles"), words=600)
    good = (root / "childes.train").read_bytes()
    (root / "childes.train").write_bytes(b"caf\xe9 ok \xff\xfe done \xe2\x82 .\n" + good)
    plan, index, lines = corpus_docs(DataConfig(kind="babylm", root=str(root)), tmp_path)
    stats = {Path(f.path).name: f for f in index.files}
    # one U+FFFD per maximal invalid subsequence: \xe9 | \xff | \xfe | \xe2\x82 (truncated)
    assert stats["childes.train"].invalid_utf8 == 4 and stats["open_subtitles.train"].invalid_utf8 == 0
    assert any(line.startswith("caf\ufffd ok \ufffd\ufffd done \ufffd .") for line in lines)
    with pytest.raises(InputError, match=r"childes.train is not valid UTF-8 \(byte 3\)"):
        corpus_docs(DataConfig(kind="babylm", root=str(root), on_invalid_utf8="error"), tmp_path)


def test_fifty_megabyte_single_line_streams_in_bounded_memory(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    unit = (paragraph(2000, 3) + " ").encode()
    reps = 50_000_000 // len(unit) + 1
    with open(root / "gutenberg.train", "wb") as f:
        f.writelines(unit for _ in range(reps))
        f.write(b"\n")
    stats = FileStats(str(root / "gutenberg.train"))
    longest = max(len(seg) for seg in read_segments(root / "gutenberg.train", stats, "data.root", "replace"))
    assert stats.bytes > 50_000_000 and longest <= 2 * readers_common.BLOCK_BYTES
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = DataConfig(kind="babylm", root=str(root), dedup="none", doc_words=5000)
    plan = plan_sources(cfg)
    cutter_docs = 0
    for raw in plan.streams[0].documents():
        cutter_docs += 1
        assert count_words(raw) <= 6250
    assert cutter_docs > 1500
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 100, grown_mb
    # data=text: one document per line, but a line beyond MAX_LINE_CHARS is cut at whitespace into
    # documents of bounded size, so no 50 MB line sits in memory whole; every word is still counted
    text_file = tmp_path / "one_line.txt"
    (root / "gutenberg.train").rename(text_file)
    with open(text_file, "a") as f:
        f.write("a short second line\n")
    cfg = DataConfig(kind="text", paths=[str(text_file)])
    index = build_corpus(cfg, plan_sources(cfg), tmp_path / "spool")
    words = index.words.tolist()
    assert sum(words[:-1]) == reps * len(unit.split()) and words[-1] == 4
    assert len(words) > 20 and max(words) * 2 < readers_files.MAX_LINE_CHARS * 3  # pieces of 1-3 M characters
    from tinylm.data.tokenizer import training_sentences

    with open(tmp_path / "spool") as f:
        pieces = list(training_sentences([f.readline()]))
    assert sum(len(p.split()) for p in pieces) == words[0] and max(map(len, pieces)) <= 4096  # the first document


# ------------------------------------------------------------------------ other sources


def test_text_source_keeps_one_document_per_line_and_strict_utf8(tmp_path):
    (tmp_path / "a.txt").write_text("first line  here\n\n  second\r\nthird\u2028fourth\n")
    train, dev = load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "a.txt")], dev_fraction=0.5))
    assert [d.text for d in train + dev] == ["first line  here", "third", "second", "fourth"]
    assert {d.source for d in train} == {"a"}
    (tmp_path / "b.txt").write_bytes(b"ok\nna\xefve\n")
    with pytest.raises(InputError, match=r"b.txt is not valid UTF-8 \(byte 5\)"):
        load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "b.txt")]))
    train, dev = load_corpus(DataConfig(kind="text", paths=[str(tmp_path / "b.txt")], on_invalid_utf8="replace"))
    assert [d.text for d in train + dev] == ["ok", "na\ufffdve"]


def test_tinystories_stories_are_documents(tmp_path):
    stories = [paragraph(30 + 10 * i, i) for i in range(40)]
    body = "".join(f"{s[:40]}\n{s[40:]}\n<|endoftext|>\n" for s in stories[:-1]) + stories[-1] + "<|endoftext|>\n"
    (tmp_path / "train.txt").write_text(body)
    (tmp_path / "valid.txt").write_text(f"{paragraph(50, 99)}\n<|endoftext|>\n")
    train, dev = load_corpus(DataConfig(kind="tinystories", root=str(tmp_path)))
    # a line break is whitespace: the break at character 40 separates words there
    assert [d.text for d in train] == [" ".join(f"{s[:40]}\n{s[40:]}".split()) for s in stories[:-1]] + [stories[-1]]
    assert len(dev) == 1 and all(d.source == "tinystories" for d in train + dev)


def test_jsonl_records_and_errors(tmp_path):
    records = [{"text": paragraph(40, i), "id": i} for i in range(30)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    train, dev = load_corpus(DataConfig(kind="jsonl", paths=[str(tmp_path / "c.jsonl")], dev_fraction=0.1))
    assert len(train) == 27 and len(dev) == 3
    assert sorted(d.text for d in train + dev) == sorted(" ".join(r["text"].split()) for r in records)
    (tmp_path / "bad.jsonl").write_text('{"text": "a b"}\n{"txt": "c"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl line 2 has no field 'text' \(it has \['txt'\]\)"):
        load_corpus(DataConfig(kind="jsonl", paths=[str(tmp_path / "bad.jsonl")]))
    (tmp_path / "bad.jsonl").write_text('{"text": "a b"}\n{oops\n')
    with pytest.raises(InputError, match=r"bad.jsonl line 2 is not JSON"):
        load_corpus(DataConfig(kind="jsonl", paths=[str(tmp_path / "bad.jsonl")]))


def test_hf_datasets_source_on_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"story": paragraph(30, i)}) for i in range(20)) + "\n")
    cfg = DataConfig(kind="hf", hf_name="json", hf_data_files=[str(tmp_path / "t.jsonl")], text_field="story",
                     dev_fraction=0.1)
    train, dev = load_corpus(cfg)
    assert len(train) == 18 and len(dev) == 2 and train[0].source == "json"
    with pytest.raises(InputError, match=r"data.text_field='text' is not a column"):
        load_corpus(DataConfig(kind="hf", hf_name="json", hf_data_files=[str(tmp_path / "t.jsonl")]))
    with pytest.raises(InputError, match=r"data.hf_name='no-such/dataset-xyz' \(split 'train'\) could not be loaded"):
        load_corpus(DataConfig(kind="hf", hf_name="no-such/dataset-xyz"))
