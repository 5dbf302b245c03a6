"""Position schemes of the BERT family (tinylm/models/bert.py): relative-position buckets and rotary.

    log_bucket_*  LTG-BERT's bucketing of the signed distance i - j (query i, key j) into
                  2 * n_buckets - 1 indices of its shared relative position embeddings
    t5_bucket_*   the earlier sketch's T5-style bucketing (bert_arch=simple: one bias per head and bucket)
    *_table       a (2T - 1,) table over the distances (what tinylm.ops.disentangled_attention takes);
    *_buckets     the (T, T) matrix of (query, key) pairs
    rotary_*      RoPE tables and rotation (bert_positions=rotary)
"""

from __future__ import annotations

import math

import torch


def log_bucket_of(rel: torch.Tensor, n_buckets: int, max_position: int) -> torch.Tensor:
    """Index in [0, 2 * n_buckets - 2] of each signed distance rel = i - j (query i, key j), as
    LTG-BERT's make_log_bucket_position: with mid = n_buckets // 2, distances below mid in size keep
    their own index, larger ones share log-spaced indices
        sign(d) * (mid + ceil(log(|d| / mid) / log((max_position - 1) / mid) * (mid - 1)))
    (|d| clamped to max_position - 1), and the result is shifted by n_buckets - 1 to start at 0.
    Monotone in the distance, so every index covers one interval of distances (which the Triton
    kernel's backward relies on)."""
    mid = n_buckets // 2
    near = rel.abs() < mid
    dist = torch.where(near, mid - 1, rel.abs().clamp(max=max_position - 1))
    # float32 as the reference computes it, so the ceil lands on the same side at exact boundaries
    log_pos = torch.ceil(torch.log(dist.float() / mid) / math.log((max_position - 1) / mid) * (mid - 1)).long() + mid
    bucket = torch.where(dist <= mid, rel, log_pos * rel.sign())
    # float32 rounding can push the farthest distance one past the table (the reference then fails)
    return bucket.clamp(-(n_buckets - 1), n_buckets - 1) + n_buckets - 1


def distances(T: int, device=None) -> torch.Tensor:
    """The 2T - 1 signed distances i - j = -(T - 1) .. T - 1 that a (2T - 1,) bucket table lists
    (tinylm.ops.disentangled_attention reads entry i - j + T - 1 for query i, key j)."""
    return torch.arange(-(T - 1), T, device=device)


def log_bucket_table(T: int, n_buckets: int, max_position: int, device=None) -> torch.Tensor:
    """(2T - 1,) LTG-BERT bucket of each distance i - j (see `distances`)."""
    return log_bucket_of(distances(T, device), n_buckets, max_position)


def log_buckets(T: int, n_buckets: int, max_position: int, device=None) -> torch.Tensor:
    """(T, T) long LTG-BERT bucket of (query i, key j) (`log_bucket_of` of i - j)."""
    rel = torch.arange(T, device=device)[:, None] - torch.arange(T, device=device)[None, :]  # i - j
    return log_bucket_of(rel, n_buckets, max_position)


def t5_bucket_of(rel: torch.Tensor, n_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket of each signed distance rel = j - i (key j, query i), T5's bidirectional scheme: half
    the buckets per direction; within a direction half of them exact (distances 0..n-1), the rest
    log-spaced up to max_distance, beyond which distances share the last bucket. Monotone in the
    distance on each side, so every bucket covers one interval of distances."""
    half = n_buckets // 2
    bucket = (rel > 0).long() * half  # keys after the query use the upper half
    dist = rel.abs()
    exact = half // 2
    log_bucket = exact + (
        torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, log_bucket)


def t5_bucket_table(T: int, n_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(2T - 1,) T5 bucket of each distance i - j (see `distances`; T5 itself counts j - i)."""
    return t5_bucket_of(-distances(T, device), n_buckets, max_distance)


def t5_buckets(T: int, n_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(T, T) T5 bucket of (query i, key j) (`t5_bucket_of` of j - i)."""
    rel = torch.arange(T, device=device)[None, :] - torch.arange(T, device=device)[:, None]  # (T, T): j - i
    return t5_bucket_of(rel, n_buckets, max_distance)


def rotary_tables(T: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, D/2) for RoPE on pairs (x[..., :D/2], x[..., D/2:])."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(T, device=device).float()[:, None] * inv_freq[None, :]  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by position (the half-split convention of GPT-NeoX / LLaMA)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
