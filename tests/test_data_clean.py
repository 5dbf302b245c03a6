"""Per-source cleaning and deduplication (exact and near), with counts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_data_sources import corpus_docs, paragraph

from tinylm.config import DataConfig
from tinylm.data.clean import Deduplicator, make_cleaner, stable_hash64
from tinylm.errors import InputError


def clean(source: str, text: str, **options) -> str:
    return make_cleaner(source, DataConfig(**options), enabled=True)(text)


def test_childes_speaker_codes_and_annotations():
    text = "*CHI:\tmore cookie [laughs] .\n*MOT:\tno [: not] ! *PAR1: ok a*B: x"
    assert clean("childes", text) == "*CHI: more cookie [laughs] . *MOT: no [: not] ! *PAR1: ok a*B: x"
    assert clean("childes", text, childes_speakers="strip") == "more cookie [laughs] . no [: not] ! ok a*B: x"
    assert clean("childes", text, childes_speakers="strip", childes_annotations="strip") == "more cookie . no ! ok a*B: x"
    assert clean("aochildes", "*MOT: hi", childes_speakers="strip") == "hi"  # BabyLM 2023 name
    assert clean("bnc_spoken", "*MOT: hi", childes_speakers="strip") == "*MOT: hi"  # other domains untouched


def test_switchboard_speakers():
    assert clean("switchboard", "A:\tyes.\nB:\tno. AB: x", switchboard_speakers="strip") == "yes. no. AB: x"


def test_wikipedia_headers():
    text = "end of it. = = = Confetti = = = Confetti is paper. = Top = x = = a = b"
    assert clean("simple_wiki", text) == text
    assert clean("simple_wiki", text, wiki_headers="strip") == "end of it. Confetti is paper. x = = a = b"
    assert clean("simple_wiki", text, wiki_headers="title") == "end of it. Confetti Confetti is paper. Top x = = a = b"


def test_gutenberg_boilerplate_and_italics():
    text = ("the end. End of Project Gutenberg's A Knight, by G.A. Henty = = = PG39490 = = = A LAD OF GRIT "
            "Produced by Al Haines and the Online Distributed Proofreading Team at http://www.pgdp.net He was "
            "_not_ here, said snake_case _two words_. Note: Project Gutenberg also has an HTML version of this "
            "file which includes the original illustrations. See 1-h.htm or 1-h.zip: (http://a/1-h.htm) or "
            "(http://a/1-h.zip) Fin.")
    assert clean("gutenberg", text) == ("the end. A LAD OF GRIT He was not here, said snake_case two words. Fin.")
    assert clean("gutenberg", text, gutenberg_italics="keep").count("_not_") == 1
    assert clean("gutenberg", text, gutenberg_boilerplate="keep", gutenberg_italics="keep") == " ".join(text.split())


def test_gutenberg_start_end_markers_span_documents():
    g = make_cleaner("gutenberg", DataConfig(), enabled=True)  # one stateful cleaner per stream
    docs = ["Title page, release date. *** START OF THE PROJECT GUTENBERG EBOOK ALICE *** Alice was tired.",
            "She sat. *** END OF THE PROJECT GUTENBERG EBOOK ALICE *** Section 1. General Terms of Use",
            "more licence text", "and more. *** START OF THIS PROJECT GUTENBERG EBOOK BOB *** Bob ran.", "The end."]
    assert [g(d) for d in docs] == ["Alice was tired.", "She sat.", "", "Bob ran.", "The end."]


def test_whitespace_normalisation_and_bad_options():
    assert clean("open_subtitles", "  a\tb \u00a0 c\n\nd  ") == "a b c d"
    assert clean("open_subtitles", "  a\tb\nc ", normalize_whitespace=False) == "a\tb c"
    assert make_cleaner("childes", DataConfig(), enabled=False)("  *CHI:  hi ") == "*CHI:  hi"  # data=text: as is
    from tinylm.data.clean import validate_clean_options

    with pytest.raises(InputError, match=r"data.wiki_headers='drop' is not an option; use one of keep, strip, title"):
        validate_clean_options(DataConfig(wiki_headers="drop"))


def test_hashes_are_stable_across_processes():
    code = "from tinylm.data.clean import stable_hash64; print(stable_hash64(b'tinylm'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {str(stable_hash64(b"tinylm"))}
    d = Deduplicator()
    assert (d.shingles(b"a b c d e f g h i j k") == Deduplicator().shingles(b"a b c d e f g h i j k")).all()


def test_exact_and_near_duplicates_are_counted():
    d = Deduplicator(ngram=8, threshold=0.5, sample=2)
    base = paragraph(400, 1).split()
    near = list(base)
    for i in range(0, len(near), 50):  # ~2% of the words changed
        near[i] = "CHANGED"
    other = paragraph(400, 2).split()
    verdicts = [d.is_duplicate(" ".join(w), w) for w in (base, base, near, other, other[:5], other[:5])]
    assert verdicts == [False, True, True, False, False, True]
    assert (d.stats.exact, d.stats.near) == (2, 1)
    # half the text new: below the 50% threshold, kept
    half = base[: len(base) // 3] + paragraph(400, 3).split()
    assert not d.is_duplicate(" ".join(half), half)


def test_dedup_in_the_corpus_report_and_modes(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    p1, p2, p3 = paragraph(300, 1), paragraph(300, 2), paragraph(300, 3)
    p2_near = p2.replace(" the ", " THE ", 2)
    (root / "childes.train").write_text("\n".join([p1, p2, p1, p2_near, p3]) + "\n")
    cfg = dict(kind="babylm", root=str(root), doc_words=300)  # one line = one document
    _, index, lines = corpus_docs(DataConfig(**cfg), tmp_path)
    st = index.stats["childes"]
    assert (st.duplicates_exact, st.duplicates_near, len(lines)) == (1, 1, 3)
    assert st.duplicate_words == len(p1.split()) + len(p2_near.split())
    _, index, lines = corpus_docs(DataConfig(**cfg, dedup="exact"), tmp_path)
    assert (index.stats["childes"].duplicates_exact, index.stats["childes"].duplicates_near, len(lines)) == (1, 0, 4)
    _, index, lines = corpus_docs(DataConfig(**cfg, dedup="none"), tmp_path)
    assert len(lines) == 5
    with pytest.raises(InputError, match="data.dedup='fuzzy' is not an option"):
        corpus_docs(DataConfig(**cfg, dedup="fuzzy"), tmp_path)
