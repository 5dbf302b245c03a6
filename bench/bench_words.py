"""What exact word counting (tinylm/data/words.py) adds to tokenizing a corpus into shards: the time
of `document_word_counts` against sentencepiece's encoding of the same documents, in one process.

    python bench/bench_words.py [--root ../shared/corpora/babylm_like] [--words 1000000] [--out FILE]

--words is a floor: whole lines are taken, and some files hold long lines. Times are wall clock
(the ratio is what compares: both steps run in the same process on the same documents).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import report
from bench_data import machine

from tinylm.config import TokenizerConfig
from tinylm.data.shards import _pieces
from tinylm.data.tokenizer import Tokenizer, train_sentencepiece
from tinylm.data.words import _risky_characters, document_word_counts


def documents(root: Path, words: int, doc_words: int = 150) -> list[str]:
    """About `words` words from each domain's .train file in turn (whole lines, so some documents are
    long), grouped into documents of at least doc_words words, then cut into the pieces the shard
    writer encodes (tinylm.data.shards._pieces)."""
    files = sorted(root.glob("*.train"))
    docs, per_file = [], words // max(len(files), 1)
    for path in files:
        taken, current = 0, []
        for line in path.read_text(encoding="utf-8").splitlines():
            current.append(line)
            n = len(line.split())
            taken += n
            if sum(len(c.split()) for c in current) >= doc_words:
                docs.append(" ".join(current))
                current = []
            if taken >= per_file:
                break
        if current:
            docs.append(" ".join(current))
    return [part for doc in docs for part in _pieces(doc)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpora" / "babylm_like"))
    ap.add_argument("--words", type=int, default=1_000_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    docs = documents(Path(args.root), args.words)
    with tempfile.TemporaryDirectory() as tmp:
        train_sentencepiece(docs, TokenizerConfig(vocab_size=8000), Path(tmp) / "t.model")
        tok = Tokenizer(Path(tmp) / "t.model")
        t0 = time.perf_counter()
        _risky_characters()
        t_table = time.perf_counter() - t0
        t0 = time.perf_counter()
        encoded = tok.encode(docs)
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = document_word_counts(tok.sp, docs, encoded, tok.word_start_table())
        t_words = time.perf_counter() - t0
    n_words = sum(len(d.split()) for d in docs)
    assert sum(int(c.sum()) for c in counts) == n_words
    rows = [("sentencepiece encode (baseline)", f"{t_encode:.2f}", "1.00"),
            ("exact word counts per token", f"{t_words:.2f}", f"{t_words / t_encode:.2f}"),
            ("risky-character table (once per process)", f"{t_table:.2f}", f"{t_table / t_encode:.2f}")]
    table = report.text_table(("step", "seconds", "x encode"), rows)
    card = machine()
    body = (f"{card}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n{len(docs):,} documents (pieces of at most 100k characters, as the shard writer encodes), {n_words:,} words from {args.root}; 8k BPE\n"
            f"command: python bench/bench_words.py --words {args.words}\n\n{table}")
    print(body)
    report.save("words", card, False, "Exact words per token vs tokenizing (tinylm/data/words.py)", body, args.out)


if __name__ == "__main__":
    main()
