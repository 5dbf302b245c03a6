"""Dev perplexity and bits per byte of a causal model on its run's dev shard.

The dev shard (tinylm/data/shards.py) lays documents out as `<bos> tokens <eos>`. Whole documents
are taken in order up to `max_bytes` bytes of text (a byte cap, not a token cap, so that runs with
different tokenizers score the same text), concatenated, and cut into windows of the model's length
that overlap by one token, so every token after the first is predicted once (context restarts at
each window). BOS targets are not counted (a BOS after an EOS is a layout choice, not language).
A run trained with train.doc_mask is scored as it trained: each window carries its document ids, so
a document sees only itself (positions restarting at its start), as if scored alone.

    perplexity     = exp(NLL / predicted tokens)
    bits per byte  = NLL / ln 2 / UTF-8 bytes of the text, counted on the detokenised documents
                     plus one byte per document for the line break the EOS stands for
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.data.tokenizer import BOS_ID, EOS_ID


def resolve_run_path(run_dir: Path, recorded: str) -> Path | None:
    """A path a run recorded, found from here: as recorded when absolute; a relative one (data.cache_dir
    defaults to .cache/tinylm, relative to where training ran) is tried from the current directory,
    then from the run directory and each folder above it. None when it exists nowhere."""
    path = Path(recorded).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), *[Path(run_dir).resolve(), *Path(run_dir).resolve().parents]):
        if (base / path).exists():
            return base / path
    return None


def dev_shard_of(run_dir: Path) -> tuple[Path | None, str]:
    """(the run's shard folder or None, reason when None)."""
    report_path = run_dir / "data_report.json"
    if not report_path.exists():
        return None, f"no data_report.json in {run_dir}"
    recorded = json.loads(report_path.read_text()).get("shards")
    shards = resolve_run_path(run_dir, recorded) if recorded else None
    if shards is None or not (shards / "meta.json").exists():
        return None, (f"the run's shard folder {recorded} is not found from here or from {run_dir} and the folders "
                      "above it (data.cache_dir cleaned or on another machine)")
    meta = json.loads((shards / "meta.json").read_text())
    if "dev" not in meta.get("splits", {}):
        return None, f"{shards} has no dev split"
    return shards, ""


@torch.no_grad()
def dev_perplexity(model, tokenizer, shard_dir: Path, window: int, batch_size: int = 32,
                   max_bytes: int = 1_500_000, device: torch.device | None = None,
                   forward_kwargs: dict | None = None, doc_mask: bool = False) -> dict[str, Any]:
    from tinylm.data.loader import document_ids
    from tinylm.data.shards import open_shard

    shard = open_shard(shard_dir, "dev")
    tokens = np.asarray(shard.tokens)
    starts = list(shard.docs[:, 0]) + [len(tokens)]
    n_docs, n_bytes = 0, 0  # the first documents whose text fits in max_bytes (at least one)
    while n_docs < len(starts) - 1:
        content = [t for t in tokens[starts[n_docs] : starts[n_docs + 1]].tolist() if t not in (BOS_ID, EOS_ID)]
        doc_bytes = len(tokenizer.decode(content).encode("utf-8")) + 1
        if n_docs and n_bytes + doc_bytes > max_bytes:
            break
        n_docs, n_bytes = n_docs + 1, n_bytes + doc_bytes
    end = starts[n_docs]
    if n_docs == 0 or end < 2:
        return {"skipped": "the dev split is empty"}
    stream = torch.from_numpy(tokens[:end].astype(np.int64))
    stream_docs = torch.from_numpy(document_ids(shard.docs[:n_docs, 0], np.arange(end))) if doc_mask else None

    device = device or next(model.parameters()).device
    chunks = [stream[i : i + window + 1] for i in range(0, len(stream) - 1, window)]
    nll, count = 0.0, 0
    for b in range(0, len(chunks), batch_size):
        batch = chunks[b : b + batch_size]
        T = max(len(c) for c in batch) - 1
        inputs = torch.zeros(len(batch), T, dtype=torch.long)
        targets = torch.full((len(batch), T), -100, dtype=torch.long)
        docs = torch.zeros(len(batch), T, dtype=torch.long)
        for i, c in enumerate(batch):
            inputs[i, : len(c) - 1] = c[:-1]
            targets[i, : len(c) - 1] = c[1:]
            if stream_docs is not None:
                first = (b + i) * window  # stream offset of the window's first input
                ids = stream_docs[first : first + len(c) - 1]
                docs[i, : len(c) - 1] = ids
                docs[i, len(c) - 1 :] = ids[-1] + 1  # padding: a document of its own after the last (ids stay ascending)
        targets[targets == BOS_ID] = -100
        kwargs = dict(forward_kwargs or {}) | ({"doc_ids": docs.to(device)} if doc_mask else {})
        logits = model(inputs.to(device), **kwargs).float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.to(device).view(-1), ignore_index=-100, reduction="sum")
        nll += loss.item()
        count += int((targets != -100).sum())
    return {
        "documents": n_docs,
        "tokens": count,
        "bytes": n_bytes,
        "max_bytes": max_bytes,
        "loss": nll / count,  # nats per token
        "perplexity": math.exp(nll / count),
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "doc_mask": doc_mask,
        "shards": str(shard_dir),
    }
