"""Scoring candidate texts with a language model: log-probabilities summed over scored tokens.

A scored text is `(ids, scored)`: the token ids of `context + candidate` and, per token, whether it
belongs to the candidate (only those are summed; the context is conditioned on). The scorers only
need a generic forward:

    causal models:  logits = model(input_ids)                            (B, T) -> (B, T, V)
    masked models:  logits = model(input_ids, key_padding_mask=mask)     mask (B, T) bool, True = real token

Scorers:
- `causal_scores`: sum of log p(token | tokens before it), with BOS prepended so the first word is
  scored too. Texts longer than the model's window are scored in overlapping windows (each token
  sees at least half a window of context).
- `masked_scores(mode="pll")`: pseudo-log-likelihood (Salazar et al. 2020): each scored token is
  masked in turn and predicted from the rest; one row per scored token, batched across texts.
- `masked_scores(mode="pll_word")`: PLL-word-l2r (Kauf & Ivanova 2023): when a token is masked, the
  tokens after it in the same word are masked too, so a word's later pieces cannot give it away. A
  token starts a word when its piece starts with "▁".
- `masked_scores(mode="mntp")`: masked next-token prediction (GPT-BERT / LLM2Vec style): token k is
  masked and its prediction is read at position k - 1.

Rows are sorted by length and right-padded, so batching never changes a score (checked in
tests/test_eval.py against unbatched loops). `judge` turns scores into a verdict: a tie or a
non-finite score never counts as correct.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

ScoredText = tuple[list[int], list[bool]]  # token ids, and which of them are scored
MASKED_MODES = ("pll", "pll_word", "mntp")


# --------------------------------------------------------------------------------------------------
# tokenization with a scored span


def _spans(tok, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
    """(ids, byte begins, byte ends) per text: a tinylm tokenizer's piece_spans (sentencepiece or
    bytes), or those of a bare sentencepiece processor."""
    if hasattr(tok, "piece_spans"):
        return tok.piece_spans(texts)
    from tinylm.data.words import piece_spans

    return piece_spans(tok, texts)


def encode_scored(tok, context: str, candidates: Sequence[str]) -> list[ScoredText]:
    """Tokenize `context + candidate` as one text for each candidate; a token is scored when its
    bytes overlap the candidate (as the BabyLM pipeline does with offset mappings), so a piece that
    spans the boundary (e.g. "▁the" for "...contains " + "the") belongs to the candidate. `tok`: a
    tinylm tokenizer (sentencepiece or bytes) or a sentencepiece processor."""
    start = len(context.encode("utf-8"))
    out = []
    for ids, begins, ends in _spans(tok, [context + c for c in candidates]):
        # Zero-width pieces (the dummy "▁" before a user symbol, the first byte of a multi-byte
        # character) take the end of the next piece with a width.
        scored, next_end = [False] * len(ids), None
        for i in range(len(ids) - 1, -1, -1):
            end = ends[i] if ends[i] > begins[i] or next_end is None else next_end
            if ends[i] > begins[i]:
                next_end = ends[i]
            scored[i] = end > start
        out.append((ids, scored))
    return out


# --------------------------------------------------------------------------------------------------
# rows: one forward input each, with the (position, target, text index) triples read from it


@dataclass
class _Row:
    input_ids: list[int]
    reads: list[tuple[int, int, int]]  # (position whose logits are read, target id, text index)


def _run_rows(model, rows: list[_Row], n_texts: int, batch_size: int, pad_id: int, masked: bool,
              device: torch.device, forward_kwargs: dict | None = None) -> torch.Tensor:
    """Sum of log p(target) at each read, per text (float64). Rows are sorted by length and
    right-padded; masked models get key_padding_mask so padding changes nothing."""
    totals = torch.zeros(n_texts, dtype=torch.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    for start in range(0, len(order), max(batch_size, 1)):
        batch = [rows[i] for i in order[start : start + batch_size]]
        T = max(len(r.input_ids) for r in batch)
        input_ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
        real = torch.zeros((len(batch), T), dtype=torch.bool)
        for b, r in enumerate(batch):
            input_ids[b, : len(r.input_ids)] = torch.tensor(r.input_ids)
            real[b, : len(r.input_ids)] = True
        row_idx = torch.tensor([b for b, r in enumerate(batch) for _ in r.reads])
        pos = torch.tensor([p for r in batch for p, _, _ in r.reads])
        target = torch.tensor([t for r in batch for _, t, _ in r.reads])
        text_idx = torch.tensor([x for r in batch for _, _, x in r.reads])
        input_ids = input_ids.to(device)
        # bf16 autocast on CUDA (fp32 scores agree: tests/kernels/test_scoring_bf16.py); fp32 on CPU
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
            if masked:
                logits = model(input_ids, key_padding_mask=real.to(device), **(forward_kwargs or {}))
            else:
                logits = model(input_ids, **(forward_kwargs or {}))
        picked = logits[row_idx.to(device), pos.to(device)].float()  # (R, V)
        log_probs = F.log_softmax(picked, dim=-1).gather(1, target.to(device)[:, None]).squeeze(1)
        totals.index_add_(0, text_idx, log_probs.double().cpu())
    return totals


def model_window(model, max_len: int = 0) -> int:
    """Positions the model can see: max_len if given, else model.cfg.max_seq_len (or no limit)."""
    if max_len > 0:
        return max_len
    cfg = getattr(model, "cfg", None)
    return int(getattr(cfg, "max_seq_len", 0) or 1 << 30)


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# causal


def _causal_rows(ids: list[int], scored: list[bool], text: int, bos_id: int, window: int) -> list[_Row]:
    full = [bos_id, *ids]  # the model reads full[:-1] and predicts full[1:]
    n = len(full)
    if n - 1 <= window:
        reads = [(j - 1, full[j], text) for j in range(1, n) if scored[j - 1]]
        return [_Row(full[:-1], reads)] if reads else []
    rows, done, begin, stride = [], 0, 0, max(window // 2, 1)
    while done < n - 1:
        end = min(begin + window, n - 1)  # inputs full[begin:end], targets full[begin+1:end+1]
        reads = [(j - 1 - begin, full[j], text) for j in range(max(done + 1, begin + 1), end + 1) if scored[j - 1]]
        if reads:
            rows.append(_Row(full[begin:end], reads))
        done = end
        begin += stride
    return rows


def causal_scores(model, texts: Sequence[ScoredText], bos_id: int, pad_id: int, batch_size: int = 64,
                  max_len: int = 0, device: torch.device | None = None, forward_kwargs: dict | None = None) -> list[float]:
    """Sum of log p(scored token | everything before it, BOS first) for each text. forward_kwargs
    go to every forward call (e.g. {"causal": True} for a GPT-BERT model run causally)."""
    window = model_window(model, max_len)
    rows = [row for i, (ids, scored) in enumerate(texts) for row in _causal_rows(ids, scored, i, bos_id, window)]
    device = device or model_device(model)
    return _run_rows(model, rows, len(texts), batch_size, pad_id, masked=False, device=device,
                     forward_kwargs=forward_kwargs).tolist()


# --------------------------------------------------------------------------------------------------
# masked (PLL, PLL-word, MNTP)


def _masked_rows(ids: list[int], scored: list[bool], text: int, mode: str, mask_id: int, prefix: Sequence[int],
                 suffix: Sequence[int], word_starts, window: int) -> list[_Row]:
    full = [*prefix, *ids, *suffix]
    first, stop = len(prefix), len(prefix) + len(ids)  # content positions [first, stop)
    n = len(full)
    rows = []
    for c, is_scored in enumerate(scored):
        if not is_scored:
            continue
        k = first + c
        masked = list(full)
        masked[k] = mask_id
        if mode == "pll_word":
            j = k + 1
            while j < stop and not word_starts[full[j]]:
                masked[j] = mask_id
                j += 1
        read = k if mode != "mntp" else k - 1
        if read < 0:
            raise ValueError("mntp reads token k at position k - 1: give a prefix (BOS) so the first token can be scored")
        begin = 0
        if n > window:  # a window of the model's length around the masked token
            begin = min(max(k - window // 2, 0), n - window)
        rows.append(_Row(masked[begin : begin + window], [(read - begin, full[k], text)]))
    return rows


def masked_scores(model, texts: Sequence[ScoredText], mode: str, mask_id: int, pad_id: int,
                  prefix: Sequence[int] = (), suffix: Sequence[int] = (), word_starts=None,
                  batch_size: int = 64, max_len: int = 0, device: torch.device | None = None) -> list[float]:
    """Pseudo-log-likelihood scores of a masked model (mode: pll, pll_word or mntp); `prefix` and
    `suffix` are special ids around every text (e.g. BOS ... EOS); `word_starts[id]` (pll_word) says
    whether a token begins a word."""
    if mode not in MASKED_MODES:
        raise ValueError(f"mode={mode!r}; use one of {', '.join(MASKED_MODES)}")
    if mode == "pll_word" and word_starts is None:
        raise ValueError("pll_word needs word_starts (tinylm.data.tokenizer.Tokenizer.word_start_table())")
    window = model_window(model, max_len)
    rows = [row for i, (ids, scored) in enumerate(texts)
            for row in _masked_rows(ids, scored, i, mode, mask_id, prefix, suffix, word_starts, window)]
    device = device or model_device(model)
    return _run_rows(model, rows, len(texts), batch_size, pad_id, masked=True, device=device).tolist()


# --------------------------------------------------------------------------------------------------
# verdicts


@dataclass(frozen=True)
class Verdict:
    credit: float  # 1 correct, 0 wrong, tie_credit for a tie
    outcome: str  # correct | wrong | tie | nonfinite
    predicted: int  # the candidate reported as the model's choice (never the correct one on a tie)


def judge(scores: Sequence[float], correct: int, tie_credit: float = 0.0) -> Verdict:
    """A tie for the top score that includes the correct candidate earns `tie_credit` (0 by default);
    any non-finite score makes the item wrong. In both cases the reported prediction is another
    candidate, so predictions files agree with the accuracy."""
    other = next(i for i in range(len(scores)) if i != correct)
    if not all(math.isfinite(s) for s in scores):
        return Verdict(0.0, "nonfinite", other)
    best = max(scores)
    top = [i for i, s in enumerate(scores) if s == best]
    if correct in top and len(top) > 1:
        return Verdict(float(tie_credit), "tie", next(i for i in top if i != correct))
    if top == [correct]:
        return Verdict(1.0, "correct", correct)
    return Verdict(0.0, "wrong", top[0])
