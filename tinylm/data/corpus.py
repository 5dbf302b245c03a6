"""Corpora as lists of documents: reading, exact word counts, and the train/dev split.

Words are counted the way BabyLM counts them: whitespace-separated strings (`str.split()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinylm.config import DataConfig
from tinylm.errors import InputError


@dataclass(frozen=True)
class Document:
    text: str
    source: str  # where it came from (file stem or "default"); curricula and reports use it


def count_words(text: str) -> int:
    return len(text.split())


def total_words(docs: list[Document]) -> int:
    return sum(count_words(d.text) for d in docs)


def expand_paths(paths: list[str], key: str) -> list[Path]:
    """Files named directly, plus every regular file (sorted) inside named folders."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise InputError(f"{key}: {raw} does not exist; point it at a UTF-8 text file or a folder of them")
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not inside:
                raise InputError(f"{key}: folder {raw} has no files; add text files or choose another folder")
            files.extend(inside)
        else:
            files.append(p)
    return files


def read_text_file(path: Path, key: str) -> list[Document]:
    """One document per non-empty line; invalid UTF-8 is an error naming the file and byte offset."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{key}: {path} is not valid UTF-8 (byte {e.start}); re-encode it, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name}`"
        ) from None
    return [Document(line.strip(), path.stem) for line in text.splitlines() if line.strip()]


def split_train_dev(docs: list[Document], dev_fraction: float) -> tuple[list[Document], list[Document]]:
    """Deterministic split by document: every k-th document (k = round(1 / dev_fraction)) to dev;
    a corpus too small for that gives its last document to dev."""
    if not 0 < dev_fraction < 1:
        raise InputError(f"data.dev_fraction={dev_fraction} must be between 0 and 1 (exclusive)")
    every = max(2, round(1 / dev_fraction))
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    dev = [d for i, d in enumerate(docs) if i % every == every - 1]
    if not dev and len(docs) >= 2:
        train, dev = docs[:-1], docs[-1:]
    return train, dev


def load_corpus(cfg: DataConfig) -> tuple[list[Document], list[Document]]:
    """The train and dev documents that `cfg` names, validated (no empty corpus, no empty dev)."""
    if cfg.kind == "default":
        from tinylm.data.default_corpus import generate_documents

        docs = [Document(" ".join(t.split()), "default") for t in generate_documents(cfg.default_words, cfg.default_seed)]
        train, dev = split_train_dev(docs, cfg.dev_fraction)
    elif cfg.kind == "text":
        if not cfg.paths:
            raise InputError("data.paths is empty; pass data.paths=[FILE_OR_FOLDER,...] with data=text")
        train = [d for f in expand_paths(cfg.paths, "data.paths") for d in read_text_file(f, "data.paths")]
        if cfg.dev_paths:
            dev = [d for f in expand_paths(cfg.dev_paths, "data.dev_paths") for d in read_text_file(f, "data.dev_paths")]
        else:
            if len(train) < 2:
                raise InputError(
                    f"data.paths={list(cfg.paths)} holds {len(train)} document(s); a dev split needs at "
                    "least 2 (one per line), or give data.dev_paths"
                )
            train, dev = split_train_dev(train, cfg.dev_fraction)
    else:
        raise InputError(f"data.kind={cfg.kind!r} is not a corpus kind; use default or text")

    where = "data.paths=" + str(list(cfg.paths)) if cfg.kind == "text" else "the default corpus"
    if total_words(train) == 0:
        raise InputError(f"{where} contains no text (0 words); point it at a non-empty UTF-8 text corpus")
    if total_words(dev) == 0:
        raise InputError(f"the dev split of {where} is empty; give data.dev_paths or more documents")
    return train, dev
