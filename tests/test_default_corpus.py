"""Tests for the embedded default corpus generator (tinylm.data.default_corpus)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm.data import default_corpus as dc
from tinylm.data import default_lexicon as lex
from tinylm.data.default_corpus import generate_documents, write_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big():
    return generate_documents(250_000, seed=0)


@pytest.fixture(scope="module")
def text(big):
    return " ".join(big)


def _n_words(docs):
    return sum(len(d.split()) for d in docs)


def _vocab(docs):
    return {t for d in docs for t in re.findall(r"[a-z]+(?:['-][a-z]+)*", d.lower())}


# ------------------------------------------------------------------------------- determinism


def test_same_seed_same_text_different_seed_different():
    a = generate_documents(20_000, seed=0)
    assert a == generate_documents(20_000, seed=0)
    b = generate_documents(20_000, seed=1)
    assert a != b
    # Not just a reordering: the documents themselves differ.
    assert len(set(a) & set(b)) < len(a) // 10


def test_prefix_stable_when_asking_for_more_words():
    small, large = generate_documents(5_000, seed=7), generate_documents(20_000, seed=7)
    assert large[: len(small)] == small


def test_independent_of_hash_randomisation():
    # A fresh interpreter with a different PYTHONHASHSEED must produce the same bytes.
    code = ("import hashlib; from tinylm.data.default_corpus import generate_documents as g; "
            "print(hashlib.sha256('\\n'.join(g(30000, 5)).encode()).hexdigest())")
    outs = set()
    for hs in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                capture_output=True, text=True).stdout.strip())
    import hashlib
    here = hashlib.sha256("\n".join(generate_documents(30000, 5)).encode()).hexdigest()
    assert outs == {here}


# ------------------------------------------------------------------------------ size and shape


@pytest.mark.parametrize("n", [1, 100, 1_000, 30_000])
def test_word_count_at_least_and_close(n):
    docs = generate_documents(n, seed=3)
    total = _n_words(docs)
    assert total >= n
    # Stops right after crossing n: at most one document (< 300 words) of overshoot.
    assert total - _n_words(docs[:-1]) < 300
    assert _n_words(docs[:-1]) < n


def test_zero_words_is_empty():
    assert generate_documents(0) == []


def test_documents_are_single_paragraphs_of_several_sentences(big):
    for d in big:
        assert "\n" not in d and d == d.strip() and "  " not in d
        assert len(re.findall(r"[.!?]", d)) >= 4, d
        assert "{" not in d and "}" not in d, d          # no unfilled template slot
        assert d[0].isupper() or d[0] == '"', d
    lengths = sorted(len(d.split()) for d in big)
    assert 30 <= lengths[len(lengths) // 2] <= 200


def test_mix_of_stories_and_conversations(big):
    convo = sum(1 for d in big if re.search(r'" (asks|says) ', d))
    assert 0.2 < convo / len(big) < 0.6


def test_vocabulary_size_in_intended_range(big):
    v = _vocab(big)
    assert 600 <= len(v) <= 1500, len(v)
    # And most of it is actually used more than once (not a long tail of one-offs).
    counts = {}
    for d in big:
        for t in re.findall(r"[a-z]+", d.lower()):
            counts[t] = counts.get(t, 0) + 1
    assert sum(1 for c in counts.values() if c == 1) < 0.05 * len(counts)


def test_many_distinct_documents(big):
    assert len(set(big)) > 0.95 * len(big)


# ---------------------------------------------------------------------------------- agreement


def test_a_an_agreement(text):
    assert not re.findall(r"\b[Aa] [aeiouAEIOU]\w*", text)
    assert not re.findall(r"\b[Aa]n [^aeiouAEIOU\W]\w*", text)
    assert re.search(r"\ban [aeiou]", text) and re.search(r"\ba [b-df-hj-np-tv-z]", text)


def test_pronoun_verb_agreement(text):
    bad = [r"\b(he|she|it) (are|were|have|do|like|want|go)\b",
           r"\bthey (is|was|has|does|likes|wants|goes)\b",
           r"\bI (is|are|was not|has|likes)\b", r"\byou (is|am|was)\b",
           r"\bwe (is|am|was)\b"]
    for pat in bad:
        hits = re.findall(pat, text, flags=re.IGNORECASE)
        assert not hits, (pat, hits[:5])
    # A single named child takes singular verbs ("Ben is", "Mia was"); "X and Ben are" is fine.
    names = "|".join(lex.GIRLS + lex.BOYS)
    hits = re.findall(rf"(?<!and )(?<![Dd]oes )(?<![Dd]id )\b({names}) "
                      r"(are|were|have|like|want)\b", text)
    assert not hits, hits[:5]
    assert re.search(rf"\b({names}) is\b", text) and re.search(rf"\b({names}) was\b", text)
    # Both sides of each rule do occur, so the model has something to learn.
    for good in (r"\b[Ss]he was\b", r"\b[Tt]hey were\b", r"\b[Hh]e likes\b", r"\bThey are\b"):
        assert re.search(good, text), good


def test_noun_number_agreement(text):
    nouns = ([a[0] for a in lex.ANIMALS] + [f[0] for f in lex.FOODS] + list(lex.TOYS) + ["egg"])
    sing = {n for n in nouns if lex.plural(n) != n}
    plur = {lex.plural(n) for n in sing}
    for num, noun in re.findall(r"\b(one|two|three|four|five|six|seven|eight|nine|ten) (\w+)",
                                text, flags=re.IGNORECASE):
        if num.lower() == "one":
            assert noun not in plur, (num, noun)
        else:
            assert noun not in sing, (num, noun)
    for noun in re.findall(r"\bThe (\w+) are\b", text):
        assert noun not in sing, noun
    for noun in re.findall(r"\bThe (\w+) (?:is|says|likes)\b", text):
        assert noun not in plur, noun
    assert not re.search(r"There was only (two|three|four|five) ", text)
    assert not re.search(r"There were only one ", text)


def test_plural_and_verb_morphology():
    assert [lex.plural(w) for w in ("dog", "fox", "puppy", "mouse", "teddy bear", "boy")] == \
        ["dogs", "foxes", "puppies", "mice", "teddy bears", "boys"]
    assert lex.verb_forms("fly kites") == ("flies kites", "flew kites", "flying kites")
    assert lex.verb_forms("hop like a frog")[1:] == ("hopped like a frog", "hopping like a frog")
    assert lex.verb_forms("bake cookies") == ("bakes cookies", "baked cookies", "baking cookies")
    assert lex.verb_forms("play tag") == ("plays tag", "played tag", "playing tag")
    assert lex.a_or_an("orange cat") == "an orange cat" and lex.a_or_an("red apple") == "a red apple"


# ----------------------------------------------------------------------- structure and facts


def test_world_facts_are_consistent(text):
    sound = {a[0]: a[1] for a in lex.ANIMALS}
    diet = {a[0]: a[2] for a in lex.ANIMALS}
    said = re.findall(r"The (\w+) says ([\w-]+)!", text)
    assert said
    for an, s in said:
        assert sound[an] == s, (an, s)
    # Stories: 'The cow said, "Moo!"' / '"Moo!" said the cows.'
    story_said = re.findall(r'The (\w+) said, "([\w-]+)!"', text)
    singular = {lex.plural(a[0]): a[0] for a in lex.ANIMALS}
    story_said += [(singular[an], s) for s, an in re.findall(r'"([\w-]+)!" said the (\w+)\.', text)]
    assert len(story_said) > 50
    for an, s in story_said:
        assert sound[an] == s.lower(), (an, s)
    liked = re.findall(r"The (\w+) likes (\w+),\" says", text)
    assert liked
    for an, food in liked:
        assert diet[an] == food, (an, food)
    days = lex.DAYS
    for today, tomorrow in re.findall(r"Today is (\w+)\.\" \"And what day is tomorrow\?\" "
                                      r"\"Tomorrow is (\w+)", text):
        assert days[(days.index(today) + 1) % 7] == tomorrow
    for big_, small in re.findall(r"The (\w+) is bigger than the (\w+)\.", text):
        assert int(dict((a[0], a[3]) for a in lex.ANIMALS)[big_]) > \
            int(dict((a[0], a[3]) for a in lex.ANIMALS)[small])


def test_characters_recur_within_stories(big):
    names = set(lex.GIRLS) | set(lex.BOYS)
    recurring = 0
    for d in big:
        counts = [len(re.findall(rf"\b{n}\b", d)) for n in names]
        recurring += max(counts) >= 3
    assert recurring > 0.8 * len(big)


def test_stories_have_dialogue_and_questions(big):
    assert sum('"' in d for d in big) > 0.8 * len(big)
    assert sum("?" in d for d in big) > 0.6 * len(big)
    assert any("Where is the" in d for d in big) and any("Once upon a time" in d for d in big)


# ------------------------------------------------------------------------------ write_corpus


def _lines(p):
    return p.read_text(encoding="utf-8").splitlines()


def test_write_corpus_split_counts_and_determinism(tmp_path):
    stats = write_corpus(tmp_path / "a", n_words=40_000, seed=2)
    train, dev = _lines(tmp_path / "a" / "default.train"), _lines(tmp_path / "a" / "default.dev")
    docs = generate_documents(40_000, seed=2)
    assert stats == {"train_words": _n_words(train), "dev_words": _n_words(dev),
                     "documents": len(docs)}
    assert len(train) + len(dev) == len(docs)
    # Split by whole document: every 20th document (indices 19, 39, ...) goes to dev, in order.
    assert dev == [d for i, d in enumerate(docs) if i % 20 == 19]
    assert train == [d for i, d in enumerate(docs) if i % 20 != 19]
    assert stats["train_words"] + stats["dev_words"] >= 40_000
    assert 0.03 < stats["dev_words"] / (stats["train_words"] + stats["dev_words"]) < 0.07
    write_corpus(tmp_path / "b", n_words=40_000, seed=2)
    for name in ("default.train", "default.dev"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(os.listdir(tmp_path / "a")) == ["default.dev", "default.train"]
    assert (tmp_path / "a" / "default.train").stat().st_mode & 0o444 == 0o444


def test_write_corpus_other_fractions(tmp_path):
    s = write_corpus(tmp_path, n_words=5_000, seed=0, dev_fraction=0.0)
    assert s["dev_words"] == 0 and _lines(tmp_path / "default.dev") == []
    s = write_corpus(tmp_path, n_words=5_000, seed=0, dev_fraction=0.5)
    assert len(_lines(tmp_path / "default.dev")) == s["documents"] // 2
    with pytest.raises(ValueError):
        write_corpus(tmp_path, n_words=100, dev_fraction=1.5)


def test_write_corpus_is_atomic(tmp_path, monkeypatch):
    write_corpus(tmp_path, n_words=3_000, seed=0)
    before = (tmp_path / "default.train").read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(dc.os, "replace", boom)
    with pytest.raises(OSError):
        write_corpus(tmp_path, n_words=3_000, seed=1)
    # The old file is intact and no temp file is left behind.
    assert (tmp_path / "default.train").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["default.dev", "default.train"]


def test_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(ROOT / "data_prep" / "make_default_corpus.py"),
                          "--out", str(tmp_path), "--words", "2000", "--seed", "4"],
                         env=env, check=True, capture_output=True, text=True).stdout
    assert "train_words" in out and (tmp_path / "default.train").exists()
    assert (tmp_path / "default.train").read_text() == "\n".join(
        d for i, d in enumerate(generate_documents(2000, 4)) if i % 20 != 19) + "\n"
