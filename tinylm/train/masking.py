"""Masking machinery of the masked objectives (mlm, hybrid): which tokens to predict and how to corrupt them.

`Masker` chooses the positions of a (B, T) batch, by token masking (stochastic-rounded count per
row, Gumbel-top-k, optionally weighted for adaptive masking) or span masking (geometric span
lengths, placed without touching), and corrupts them BERT-style (80/10/10: <mask>, a random
non-special token, or kept); `mntp_targets` turns the choice into masked next-token prediction
targets (token k predicted at position k - 1). Every draw comes from a torch.Generator passed in,
never the global RNG. Special tokens (ids 0..6: pad, unk, bos, eos, <mask>, <cls>, <sep>;
tinylm.data.tokenizer) are never chosen for masking and never drawn as random replacements. The
mask-rate schedule, the adaptive loss EMA and the generator state belong to the objective
(tinylm.train.objectives), which drives this module.
"""

from __future__ import annotations

import math

import torch

from tinylm.config import ObjectiveConfig
from tinylm.data.tokenizer import EXTRA_SPECIALS, MASK_ID

MASKINGS = ("token", "span")
N_SPECIAL = 4 + len(EXTRA_SPECIALS)  # pad, unk, bos, eos, then the extra specials: ids 0..6
IGNORE = -100  # cross-entropy target of unscored positions


def mntp_targets(ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Masked next-token prediction targets: the chosen token k (of the uncorrupted ids) is the target
    at position k - 1; every other position is IGNORE. ids, chosen: (B, T)."""
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = torch.where(chosen[:, 1:], ids[:, 1:], IGNORE)
    return targets


class Masker:
    """Chooses the positions to predict and corrupts them, from a generator passed in.

    token: each row masks n = round(rate * m) of its m maskable tokens (stochastic rounding, so the
           expected rate is exact), chosen by Gumbel-top-k on log weights: uniformly without weights;
           with adaptive weights, in proportion to them (sampling without replacement), so the
           number masked, and the mean rate, never change.
    span:  the n tokens come in spans with lengths ~ Geometric(1 / span_mean) clipped to span_max (the
           last one cut to fit), placed uniformly among the maskable tokens without touching each
           other (a span may straddle a special token, which itself stays unmasked).
    corrupt: a chosen token becomes <mask> with mask_token_prob, a random non-special token with
           random_token_prob, and stays itself otherwise (BERT's 80/10/10).
    """

    def __init__(self, cfg: ObjectiveConfig, vocab_size: int):
        self.cfg = cfg
        self.vocab_size = vocab_size

    def choose(self, ids: torch.Tensor, rate: float, gen: torch.Generator, maskable: torch.Tensor | None = None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) bool of the chosen positions. ids on the CPU; `maskable` narrows the candidates
        further (hybrid: never position 0); `weights` (B, T) > 0 for adaptive token masking."""
        can = ids >= N_SPECIAL
        if maskable is not None:
            can &= maskable
        m = can.sum(dim=1)  # (B,)
        n = torch.minimum((rate * m + torch.rand(m.shape, generator=gen)).floor().long(), m)  # stochastic rounding
        if self.cfg.masking == "span":
            return self._spans(can, n, gen)
        u = torch.rand(ids.shape, generator=gen).clamp_(min=1e-20)
        keys = -torch.log(-torch.log(u))  # Gumbel(0, 1)
        if weights is not None:
            keys = keys + weights.log()
        keys = keys.masked_fill(~can, float("-inf"))
        order = keys.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(ids.shape[1]).expand_as(order))
        return rank < n[:, None]

    def span_lengths(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Span lengths summing to n: geometric(1 / span_mean) clipped to span_max, the last cut."""
        if n == 0:
            return torch.zeros(0, dtype=torch.long)
        p = 1.0 / self.cfg.span_mean
        u = torch.rand(n, generator=gen, dtype=torch.float64).clamp_(min=1e-300)
        if p >= 1.0:
            lengths = torch.ones(n, dtype=torch.long)
        else:  # inverse CDF of P(L = l) = (1 - p)^(l - 1) p, l >= 1
            lengths = 1 + (u.log() / math.log(1 - p)).floor().long()
        lengths = lengths.clamp_(1, self.cfg.span_max)
        ends = lengths.cumsum(0)
        k = int((ends < n).sum()) + 1  # spans needed to reach n (each is >= 1, so k <= n)
        lengths = lengths[:k].clone()
        lengths[-1] -= int(ends[k - 1]) - n
        return lengths

    def _spans(self, can: torch.Tensor, n: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        chosen = torch.zeros_like(can)
        for b in range(can.shape[0]):
            positions = can[b].nonzero().squeeze(1)  # the row's maskable positions, in order
            n_b = int(n[b])
            lengths = self.span_lengths(n_b, gen)
            if n_b == 0:
                continue
            free = len(positions) - n_b  # unmasked maskable tokens: n_b spans need distinct gaps among free + 1
            while len(lengths) > free + 1:  # (only at very high rates) join the last two spans
                lengths = torch.cat([lengths[:-2], lengths[-2:].sum(0, keepdim=True)])
            gaps = torch.randperm(free + 1, generator=gen)[: len(lengths)].sort().values
            # span j covers maskable positions gaps[j] + (tokens in spans before j) + 0 .. lengths[j] - 1
            idx = torch.repeat_interleave(gaps, lengths) + torch.arange(n_b)
            chosen[b, positions[idx]] = True
        return chosen

    def corrupt(self, ids: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The model input: chosen tokens replaced by <mask>, a random token, or kept."""
        u = torch.rand(ids.shape, generator=gen)
        random_ids = torch.randint(N_SPECIAL, self.vocab_size, ids.shape, generator=gen)
        p_mask, p_rand = self.cfg.mask_token_prob, self.cfg.random_token_prob
        out = torch.where(chosen & (u < p_mask), torch.full_like(ids, MASK_ID), ids)
        return torch.where(chosen & (u >= p_mask) & (u < p_mask + p_rand), random_ids, out)
