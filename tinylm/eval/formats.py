"""Readers for the zero-shot evaluation formats, recognised from each file's content.

Every reader yields `Item`s: a shared context, candidate continuations (the scored text of candidate
i is `context + candidates[i]`; only the candidate's tokens are scored), the index of the correct
candidate, and the labels the results are grouped by. The layouts follow the BabyLM 2025 pipeline
(babylm/evaluation-pipeline-2025, evaluation_pipeline/sentence_zero_shot/read_files.py):

| format          | recognised by                                | context  | candidates (correct first)   | uid                 |
|-----------------|----------------------------------------------|----------|------------------------------|---------------------|
| blimp           | sentence_good/bad + field + pairID (str)     | ""       | good, bad                    | UID                 |
| blimp_filtered  | sentence_good/bad + field, pair_id (int)     | ""       | good, bad                    | UID                 |
| supplement      | sentence_good/bad, no field                  | ""       | good, bad (may hold \n)      | file stem           |
| ewok            | Context1/2 + Target1/2                       | Context1 | " "+Target1, " "+Target2     | Domain              |
| entity_tracking | input_prefix + options                       | prefix   | options (options[0] correct) | <stem>_<numops>_ops |
| wug             | sentences (two, TAB-separated) + ratio       | ""       | the two sentences (graded)   | file stem           |
| zorro           | plain text, pairs of lines (bad, then good)  | ""       | good, bad                    | file stem           |

EWoK lists each item twice with Context1/Context2 and Target1/Target2 swapped; as in the pipeline
both rows are read, each scoring Target1 against Target2 given its own Context1 (Context2 is
unused). Wug items have no correct candidate: they are scored by Spearman correlation with `ratio`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tinylm.errors import InputError

# Only these suffixes are read; other files in a task folder (README.md, SHA256SUMS, ...) are listed
# as ignored. A .jsonl/.json/.txt file whose content matches no format is an error.
DATA_SUFFIXES = (".jsonl", ".json", ".txt")


@dataclass(frozen=True)
class Item:
    context: str  # text before every candidate ("" = whole sentences are scored)
    candidates: tuple[str, ...]  # continuations of the context
    correct: int | None  # index of the correct candidate; None for graded items (wug)
    task: str  # the format / benchmark: blimp, blimp_filtered, supplement, ewok, entity_tracking, wug, zorro
    source: str  # the file, relative to the task folder
    uid: str  # paradigm or sub-task, as BabyLM reports it
    phenomenon: str  # linguistic phenomenon (BLiMP linguistics_term, Zorro phenomenon, ...)
    item_id: str  # id within the file (pair id, line number, ...)
    ratio: float | None = None  # wug: human preference for candidates[0]


@dataclass
class TaskFile:
    path: Path
    source: str  # path relative to the task folder
    task: str
    items: list[Item]


FORMAT_NAMES = {
    "blimp": "BLiMP (original, pairID)",
    "blimp_filtered": "BLiMP filtered by BabyLM 2025 (pair_id)",
    "supplement": "BLiMP supplement (BabyLM)",
    "ewok": "EWoK",
    "entity_tracking": "entity tracking",
    "wug": "wug adjective nominalization / past tense",
    "zorro": "Zorro",
}


def _need(record: dict, keys: tuple[str, ...], where: str, text: tuple[str, ...] = ()) -> None:
    """Every key present; those in `text` hold strings (what the scorer tokenizes)."""
    missing = [k for k in keys if k not in record]
    if missing:
        raise InputError(f"{where}: record lacks {missing}; is the file complete and in one format?")
    for k in text:
        if not isinstance(record[k], str):
            raise InputError(f"{where}: `{k}` must be a string, found {type(record[k]).__name__} {record[k]!r}; fix the record")


def _blimp_like(records: list[dict], source: str, stem: str, task: str) -> list[Item]:
    items = []
    for n, r in records:
        where = f"{source} line {n}"
        _need(r, ("sentence_good", "sentence_bad"), where, text=("sentence_good", "sentence_bad"))
        if task == "supplement":
            uid, phenomenon = stem, stem
        else:
            _need(r, ("UID", "linguistics_term"), where)
            uid, phenomenon = str(r["UID"]), str(r["linguistics_term"])
        pair = r.get("pairID", r.get("pair_id", n))
        items.append(Item("", (r["sentence_good"], r["sentence_bad"]), 0, task, source, uid, phenomenon, str(pair)))
    return items


def _ewok(records, source, stem, task) -> list[Item]:
    items = []
    for n, r in records:
        _need(r, ("Context1", "Target1", "Target2"), f"{source} line {n}", text=("Context1", "Target1", "Target2"))
        uid = str(r.get("Domain", stem))
        phenomenon = f"{r.get('ContextType', '?')}/{r.get('ContextDiff', '?')}"
        items.append(Item(r["Context1"], (" " + r["Target1"], " " + r["Target2"]), 0, task, source, uid, phenomenon, str(n)))
    return items


def _entity_tracking(records, source, stem, task) -> list[Item]:
    items = []
    for n, r in records:
        _need(r, ("input_prefix", "options", "numops"), f"{source} line {n}", text=("input_prefix",))
        if not isinstance(r["options"], list) or len(r["options"]) < 2 or not all(isinstance(o, str) for o in r["options"]):
            raise InputError(f"{source} line {n}: `options` must be a list of at least two strings")
        uid = f"{stem}_{r['numops']}_ops"
        items.append(Item(r["input_prefix"], tuple(r["options"]), 0, task, source, uid, stem,
                          str(r.get("sample_id", n))))
    return items


def _wug(records, source, stem, task) -> list[Item]:
    items = []
    for n, r in records:
        _need(r, ("sentences", "ratio"), f"{source} line {n}", text=("sentences",))
        ratio = r["ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
            raise InputError(f"{source} line {n}: `ratio` must be a finite number, found {ratio!r}; fix the record")
        sentences = tuple(r["sentences"].split("\t"))
        if len(sentences) != 2:
            raise InputError(f"{source} line {n}: `sentences` must hold two TAB-separated sentences, found {len(sentences)}")
        items.append(Item("", sentences, None, task, source, stem, stem, str(n), ratio=float(ratio)))
    return items


_JSONL_READERS: dict[str, Callable] = {
    "blimp": _blimp_like, "blimp_filtered": _blimp_like, "supplement": _blimp_like,
    "ewok": _ewok, "entity_tracking": _entity_tracking, "wug": _wug,
}


def detect_jsonl_format(record: dict) -> str | None:
    """The format of a JSON-lines file from the keys of its first record (None if unknown)."""
    keys = set(record)
    if {"sentence_good", "sentence_bad"} <= keys:
        if "field" in keys or "UID" in keys:
            return "blimp" if "pairID" in keys else "blimp_filtered"
        return "supplement"
    if {"Context1", "Target1", "Target2"} <= keys:
        return "ewok"
    if {"input_prefix", "options"} <= keys:
        return "entity_tracking"
    if {"sentences", "ratio"} <= keys:
        return "wug"
    return None


def _looks_like_minimal_pairs(lines: list[str]) -> bool:
    """Zorro: an even number of sentences where lines 2i-1 and 2i share most of their words."""
    if not lines or len(lines) % 2:
        return False
    close = 0
    for bad, good in zip(lines[0::2], lines[1::2]):
        a, b = Counter(bad.split()), Counter(good.split())
        overlap = sum((a & b).values()) / max(sum((a | b).values()), 1)
        close += overlap >= 0.5
    return close >= 0.9 * (len(lines) // 2)


def read_task_file(path: Path, root: Path) -> TaskFile:
    """Read one file; its format comes from its content. Unknown content is an InputError naming it."""
    source = str(path.relative_to(root))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"tasks: {path} is not valid UTF-8 (byte {e.start}); re-encode it or move it out of the task folder") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InputError(f"tasks: {path} is empty; remove it from the task folder")
    first = lines[0][1].lstrip()
    if first.startswith("{"):
        records = []
        for n, line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"tasks: {path} line {n} is not valid JSON ({e.msg}); every line must be one JSON object") from None
            if not isinstance(record, dict):
                raise InputError(f"tasks: {path} line {n} is not a JSON object")
            records.append((n, record))
        task = detect_jsonl_format(records[0][1])
        if task is None:
            raise InputError(
                f"tasks: {path} is in an unknown format (first record has keys {sorted(records[0][1])}); expected "
                f"one of: {', '.join(FORMAT_NAMES.values())} (see tinylm/eval/formats.py)"
            )
        items = _JSONL_READERS[task](records, source, path.stem, task)
        return TaskFile(path, source, task, items)
    sentences = [line.strip() for _, line in lines]
    if _looks_like_minimal_pairs(sentences):
        uid = path.stem
        phenomenon = uid.rsplit("-", 1)[0]  # "island-effects-adjunct_island" -> "island-effects"
        items = [
            Item("", (good, bad), 0, "zorro", source, uid, phenomenon, str(i))
            for i, (bad, good) in enumerate(zip(sentences[0::2], sentences[1::2]))
        ]
        return TaskFile(path, source, "zorro", items)
    raise InputError(
        f"tasks: {path} is in an unknown format (neither JSON lines nor Zorro-style pairs of sentences); expected "
        f"one of: {', '.join(FORMAT_NAMES.values())}, or move it out of the task folder"
    )


def find_task_files(tasks: str | Path) -> tuple[list[Path], list[Path]]:
    """(data files, ignored files) under a folder, recursively and sorted; or the one file named."""
    root = Path(tasks).expanduser()
    if not root.exists():
        raise InputError(f"tasks={tasks}: no such file or folder; point it at a folder of evaluation files")
    if root.is_file():
        return [root], []
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    data = [p for p in files if p.suffix.lower() in DATA_SUFFIXES]
    ignored = [p for p in files if p.suffix.lower() not in DATA_SUFFIXES]
    if not data:
        raise InputError(f"tasks={tasks}: no evaluation files ({', '.join(DATA_SUFFIXES)}) in this folder")
    return data, ignored


def read_tasks(tasks: str | Path, max_items: int = 0) -> tuple[list[TaskFile], list[str]]:
    """Every task file under `tasks` (recursive), plus the relative paths of ignored files.
    max_items > 0 keeps the first max_items items of each file (quick looks, tests)."""
    root = Path(tasks).expanduser()
    data, ignored = find_task_files(root)
    base = root if root.is_dir() else root.parent
    out = []
    for path in data:
        tf = read_task_file(path, base)
        if max_items > 0:
            tf.items = tf.items[:max_items]
        out.append(tf)
    return out, [str(p.relative_to(base)) for p in ignored]
