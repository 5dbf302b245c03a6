"""Readers for the generic file and dataset kinds: data=text (one document per non-empty line of
UTF-8 text files), data=jsonl (one record's data.text_field per line, cut into documents of about
data.doc_words words) and data=hf (rows of a `datasets.load_dataset` split, cut the same way). Each
`_plan_<kind>(cfg, ...)` returns the streams (and inputs) that tinylm.data.sources.plan_sources
puts into its SourcePlan; the reading itself is tinylm.data.readers_common.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tinylm.data.readers_common import DocumentCutter, Stream, _file_stream, expand_paths, iter_lines
from tinylm.errors import InputError

# -------------------------------------------------------------------------------------- text


# data=text: a line longer than this is cut (at whitespace) into documents of about this size.
MAX_LINE_CHARS = 1 << 20


def _lines_as_documents(segments: Iterator[str]) -> Iterator[str]:
    """data=text: one document per non-empty line, as str.splitlines() sees lines (a line beyond
    MAX_LINE_CHARS becomes several documents, so a 50 MB line never sits in memory whole)."""
    for line in iter_lines(segments, MAX_LINE_CHARS):
        for piece in line.splitlines():
            if piece.strip():
                yield piece


def _plan_text(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    if not cfg.paths:
        raise InputError("data.paths is empty; pass data.paths=[FILE_OR_FOLDER,...] with data=text")
    train = expand_paths(cfg.paths, "data.paths")
    dev = expand_paths(cfg.dev_paths, "data.dev_paths") if cfg.dev_paths else []
    split = "train" if dev else "auto"
    streams = [_file_stream(p.stem, "dev", p, "data.dev_paths", on_invalid, _lines_as_documents, group="all")
               for p in dev]
    streams += [_file_stream(p.stem, split, p, "data.paths", on_invalid, _lines_as_documents, group="all")
                for p in train]
    return streams, dev + train, f"data.paths={list(cfg.paths)}"


# ------------------------------------------------------------------------------------- jsonl


def _jsonl_records(path: Path, field_name: str, doc_words: int):
    def make(segments: Iterator[str]) -> Iterator[str]:
        for n, line in enumerate(iter_lines(segments), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"data.paths: {path} line {n} is not JSON ({e.msg}); fix the line or remove it") from None
            if not isinstance(record, dict) or field_name not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise InputError(
                    f"data.paths: {path} line {n} has no field {field_name!r} (it has {keys}); "
                    "set data.text_field to the field that holds the text"
                )
            text = record[field_name]
            if text is None:
                continue
            if not isinstance(text, str):
                raise InputError(f"data.paths: {path} line {n}: field {field_name!r} is {type(text).__name__}, not text")
            cutter = DocumentCutter(doc_words)
            yield from cutter.feed(text)
            yield from cutter.finish()

    return make


def _plan_jsonl(cfg, on_invalid) -> tuple[list[Stream], list[Path], str]:
    if not cfg.paths:
        raise InputError("data.paths is empty; pass data.paths=[FILE.jsonl_OR_FOLDER,...] with data=jsonl")
    suffixes = (".jsonl", ".json", ".ndjson")
    train = expand_paths(cfg.paths, "data.paths", suffixes)
    dev = expand_paths(cfg.dev_paths, "data.dev_paths", suffixes) if cfg.dev_paths else []
    streams = [_file_stream(p.stem, "dev", p, "data.dev_paths", on_invalid,
                            _jsonl_records(p, cfg.text_field, cfg.doc_words), group="dev") for p in dev]
    split = "train" if dev else "auto"
    streams += [_file_stream(p.stem, split, p, "data.paths", on_invalid,
                             _jsonl_records(p, cfg.text_field, cfg.doc_words)) for p in train]
    return streams, dev + train, f"data.paths={list(cfg.paths)}"


# ---------------------------------------------------------------------------------------- hf


def load_hf_split(cfg, split: str):
    """datasets.load_dataset(data.hf_name, data.hf_config, data_files=..., split=...), imported
    here only: the rest of tinylm never needs `datasets`."""
    try:
        import datasets
    except ImportError:
        raise InputError("data=hf needs the `datasets` package: pip install 'tinylm[data]'") from None
    kwargs = {"split": split}
    if cfg.hf_data_files:
        kwargs["data_files"] = list(cfg.hf_data_files)
    args = [cfg.hf_name] + ([cfg.hf_config] if cfg.hf_config else [])
    try:
        ds = datasets.load_dataset(*args, **kwargs)
    except FileNotFoundError as e:
        raise InputError(f"data.hf_name={cfg.hf_name!r}: {e}".splitlines()[0]) from None
    except Exception as e:  # offline hub, unknown split, bad files: one clear line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"data.hf_name={cfg.hf_name!r} (split {split!r}) could not be loaded: {first}; check the name, "
            "data.hf_split / data.hf_data_files, and the network (hub datasets need it the first time)"
        ) from None
    if cfg.text_field not in ds.column_names:
        raise InputError(
            f"data.text_field={cfg.text_field!r} is not a column of {cfg.hf_name!r} (columns: {ds.column_names}); "
            "set data.text_field"
        )
    return ds


def _plan_hf(cfg) -> tuple[list[Stream], dict, str]:
    if not cfg.hf_name:
        raise InputError("data.hf_name is empty; pass a dataset name (e.g. roneneldan/TinyStories) or a builder "
                         "(text, json, parquet, csv) with data.hf_data_files=[...]")
    train = load_hf_split(cfg, cfg.hf_split)
    dev = load_hf_split(cfg, cfg.hf_dev_split) if cfg.hf_dev_split else None
    name = cfg.hf_name.rstrip("/").split("/")[-1] or "hf"

    def rows(ds):
        def make() -> Iterator[str]:
            for batch in ds.iter(batch_size=1024):  # columnar batches: no dict per row
                for text in batch[cfg.text_field]:
                    if not text:
                        continue
                    cutter = DocumentCutter(cfg.doc_words)
                    yield from cutter.feed(str(text))
                    yield from cutter.finish()

        return make

    streams: list[Stream] = []
    if dev is not None:
        streams.append(Stream(name, "dev", f"{cfg.hf_name}[{cfg.hf_dev_split}]", rows(dev)))
    streams.append(Stream(name, "train" if dev is not None else "auto", f"{cfg.hf_name}[{cfg.hf_split}]", rows(train)))
    fingerprint = {"hf_train": getattr(train, "_fingerprint", None), "hf_dev": getattr(dev, "_fingerprint", None)}
    if fingerprint["hf_train"] is None:
        raise InputError(f"data.hf_name={cfg.hf_name!r}: the dataset has no fingerprint to cache it by")
    return streams, fingerprint, f"data.hf_name={cfg.hf_name}"
