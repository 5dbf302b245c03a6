"""Training objectives: what loss a batch of token windows gives (`objective=clm|mlm|hybrid|distill`).

- clm:     next-token cross-entropy (GPT, mLSTM; a BERT is run with causal=True).
- mlm:     masked language modelling (BERT): token or span masking of the non-special tokens, optional
           80/10/10 replacement, a linear mask-rate schedule, adaptive masking; the chosen tokens are
           predicted at their own positions.
- hybrid:  GPT-BERT (Charpentier & Samuel 2024): a share of the rows (or of the steps) trained
           causally, the rest masked with token k predicted at position k - 1 (masked next-token
           prediction, MNTP), so causal and masked training share the one next-token head.
- distill: clm plus knowledge distillation from an ensemble of teachers (Baby Llama, Timiryasov &
           Tastet 2023). Teachers also work with mlm and hybrid (`objective.teachers`).
- bootstrap: mlm's masking, the targets the contextual embeddings of an EMA copy of the model
           (Boot-BERT, Samuel 2023; tinylm/train/bootstrap.py), plus a share of the MLM loss.
Options of every objective: multi-token prediction (`objective.mtp_heads`, the causal losses;
tinylm/train/mtp.py) and loss-based row reweighting (`objective.reweight`; tinylm/train/reweight.py).
An objective may own weights besides the model's (`Objective.module`: MTP heads, the bootstrap
teacher and predictor): the loop trains its `trainable_parameters()`, calls `after_step` after each
optimizer step, and checkpoints the module in objective.safetensors; it is never exported.

Randomness: every draw (positions, replacements, span lengths) comes from the objective's own CPU
torch.Generator, never from the global RNG; its state (and the adaptive-masking loss EMA) is part of
`state_dict()`, which the training loop stores in every checkpoint, so a resumed run masks exactly
as the uninterrupted one. Masks are drawn on the CPU (the loader's batches live there) and moved to
the device with the inputs. Dev losses mask from a fixed seed at `mask_rate_end`, uniformly (no
adaptive weights), so evaluations are comparable across a run and across runs.

Documents (`train.doc_mask=true`): every loss takes the batch's doc_ids (B, T) (None: off) and passes
them to each model call, student and teachers, causal and masked, so attention (and an mLSTM's memory)
stays inside documents; masking itself is unchanged (specials, so <bos>/<eos>, are never chosen, and
an MNTP target k is read at k - 1, which is <bos> or later of the same document).

The masking machinery (Masker, span sampling, MNTP targets, the special-token bounds) lives in
tinylm.train.masking; the distillation loss and teacher loading in tinylm.train.distill.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tinylm import ops
from tinylm.config import ObjectiveConfig
from tinylm.errors import InputError
from tinylm.train import mtp
from tinylm.train.distill import distillation_loss, load_teachers
from tinylm.train.masking import IGNORE, MASKINGS, N_SPECIAL, Masker, mntp_targets
from tinylm.train.options import check_options
from tinylm.train.reweight import reweighted

OBJECTIVES = ("clm", "mlm", "hybrid", "distill", "bootstrap")
HYBRID_MODES = ("rows", "steps")
DEV_MASK_SEED = 20240917  # the fixed masking of every dev evaluation

Stats = dict[str, float]


# --------------------------------------------------------------------------------------------------
# losses


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) over the targets that are not IGNORE; logits (..., V) in float32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)


# --------------------------------------------------------------------------------------------------
# objective state as JSON (checkpoints)


def _encode_tensor(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "data": base64.b64encode(t.view(torch.uint8).numpy().tobytes()).decode()}


def _decode_tensor(d: dict) -> torch.Tensor:
    raw = torch.frombuffer(bytearray(base64.b64decode(d["data"])), dtype=torch.uint8)
    return raw.view(getattr(torch, d["dtype"])).reshape(d["shape"]).clone()


# --------------------------------------------------------------------------------------------------
# objectives


class Objective:
    """Base: holds the generator, the schedule and the teachers; subclasses define the losses.

    train_loss(model, input_ids, targets, step, doc_ids=None) -> (loss, stats)   (B, T) on the CPU
    evaluate(model, batches, autocast, doc_ids=None) -> {"dev_loss": ...}  batches: (B, T + 1) dev windows,
                                                        doc_ids: their (B, T) document ids, or None
    """

    name = "clm"
    generates = True  # samples.txt: generations (else pseudo-log-likelihoods of the prompts)

    def __init__(self, cfg: ObjectiveConfig, model, vocab_size: int, total_steps: int, seed: int,
                 device: torch.device, teachers: list | None = None):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.total_steps = total_steps
        self.device = device
        self.model_is_causal = bool(getattr(model, "causal", True))
        self.generator = torch.Generator().manual_seed(seed)
        self.masker = Masker(cfg, vocab_size)
        self.teachers = teachers or []
        self.loss_ema = torch.full((vocab_size,), math.log(vocab_size)) if cfg.adaptive else None
        self.loss_scale = 1.0  # fp16: the loss scale of the coming backward (the loop sets it); MTP's inner one uses it
        # the objective's own weights (checkpointed, never exported); MTP's heads here, Bootstrap's below
        self.module: torch.nn.Module | None = None
        if cfg.mtp_heads > 1:
            base = mtp.base_module(model)
            self.module = mtp.MTPHeads(cfg.mtp_heads, base.cfg.d_model, base.cfg.init_std).to(device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.module is None else [p for p in self.module.parameters() if p.requires_grad]

    def after_step(self, model, step: int) -> None:
        """Called by the loop after optimizer step `step` (counted from 1) was applied."""

    # -- model calls -------------------------------------------------------------------------------

    @staticmethod
    def run_causal(model, input_ids: torch.Tensor, model_is_causal: bool, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        docs = {} if doc_ids is None else {"doc_ids": doc_ids}  # models without doc_ids keep working when off
        return model(input_ids, **docs) if model_is_causal else model(input_ids, causal=True, **docs)

    @staticmethod
    def run_masked(model, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        return model(input_ids) if doc_ids is None else model(input_ids, doc_ids=doc_ids)

    def _teacher_logits(self, input_ids: torch.Tensor, causal: bool, doc_ids: torch.Tensor | None) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self.run_causal(t, input_ids, t.causal, doc_ids) if causal else self.run_masked(t, input_ids, doc_ids)
                    for t in self.teachers]

    def _with_teachers(self, hard: torch.Tensor, logits: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor,
                       causal: bool, stats: Stats, prefix: str = "", doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """alpha * hard + (1 - alpha) * soft, the soft loss over the positions that have targets."""
        if not self.teachers:
            return hard
        scored = targets != IGNORE
        teacher = [t[scored] for t in self._teacher_logits(input_ids, causal, doc_ids)]
        soft = distillation_loss(logits[scored], teacher, self.cfg.distill_temperature) if bool(scored.any()) else hard * 0
        stats[f"{prefix}hard_loss"] = hard.item()
        stats[f"{prefix}distill_loss"] = soft.item()
        return self.cfg.distill_alpha * hard + (1 - self.cfg.distill_alpha) * soft

    # -- masking -----------------------------------------------------------------------------------

    def mask_rate(self, step: int) -> float:
        """Linear from mask_rate_start at step 0 to mask_rate_end at the last step."""
        progress = min(1.0, step / max(1, self.total_steps - 1))
        return self.cfg.mask_rate_start + (self.cfg.mask_rate_end - self.cfg.mask_rate_start) * progress

    def _mask(self, ids: torch.Tensor, rate: float, gen: torch.Generator, shifted: bool, adaptive: bool):
        """(corrupted input, targets, chosen) on the CPU; targets at k (mlm) or k - 1 (shifted, MNTP)."""
        maskable = None
        if shifted:  # position 0 has no position before it to be predicted at
            maskable = torch.ones_like(ids, dtype=torch.bool)
            maskable[:, 0] = False
        weights = self.loss_ema[ids].clamp(min=1e-6) if adaptive and self.loss_ema is not None else None
        chosen = self.masker.choose(ids, rate, gen, maskable, weights)
        inputs = self.masker.corrupt(ids, chosen, gen)
        targets = mntp_targets(ids, chosen) if shifted else torch.where(chosen, ids, IGNORE)
        return inputs, targets, chosen

    def _masked_loss(self, model, ids: torch.Tensor, rate: float, gen: torch.Generator, shifted: bool,
                     adaptive: bool, stats: Stats, prefix: str = "", doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs, targets, chosen = self._mask(ids, rate, gen, shifted, adaptive)
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        doc_ids = None if doc_ids is None else doc_ids.to(self.device)
        hard, per_token, logits = ops.vocab_loss(model, lambda: self.run_masked(model, inputs, doc_ids), targets, IGNORE,
                                                 need_logits=bool(self.teachers) or self.cfg.reweight != "none")
        hard = self._reweighted(hard, per_token, targets, stats, prefix)
        per_token, scored = per_token.reshape(-1), targets.reshape(-1) != IGNORE
        if adaptive and self.loss_ema is not None:
            self._update_ema(targets.reshape(-1)[scored].cpu(), per_token[scored].detach().float().cpu())
        candidates = (ids >= N_SPECIAL)[:, 1:] if shifted else ids >= N_SPECIAL
        stats[f"{prefix}mask_rate"] = float(chosen.sum()) / max(1, int(candidates.sum()))
        return self._with_teachers(hard, logits, inputs, targets, causal=False, stats=stats, prefix=prefix, doc_ids=doc_ids)

    @torch.no_grad()
    def _update_ema(self, ids: torch.Tensor, losses: torch.Tensor) -> None:
        """loss_ema[id] <- decay * loss_ema[id] + (1 - decay) * (this batch's mean loss of id)."""
        counts = torch.bincount(ids, minlength=self.vocab_size)
        sums = torch.bincount(ids, weights=losses.double(), minlength=self.vocab_size)
        seen = counts > 0
        d = self.cfg.adaptive_decay
        self.loss_ema[seen] = (d * self.loss_ema[seen].double() + (1 - d) * sums[seen] / counts[seen]).float()

    def _dev_masked(self, model, batches, autocast: Callable, shifted: bool, doc_ids=None) -> float:
        gen = torch.Generator().manual_seed(DEV_MASK_SEED)
        total, count = 0.0, 0
        for i, rows in enumerate(batches):
            ids = rows[:, :-1]
            inputs, targets, _ = self._mask(ids, self.cfg.mask_rate_end, gen, shifted, adaptive=False)
            targets = targets.to(self.device)
            docs = None if doc_ids is None else doc_ids[i].to(self.device)
            with autocast():
                logits = self.run_masked(model, inputs.to(self.device), docs)
            n = int((targets != IGNORE).sum())
            if n:
                total += cross_entropy(logits, targets).item() * n
                count += n
        return total / max(count, 1)

    def _dev_causal(self, model, batches, autocast: Callable, doc_ids=None) -> float:
        total, count = 0.0, 0
        for i, rows in enumerate(batches):
            rows = rows.to(self.device)
            docs = None if doc_ids is None else doc_ids[i].to(self.device)
            with autocast():
                loss = cross_entropy(self.run_causal(model, rows[:, :-1], self.model_is_causal, docs), rows[:, 1:])
            total += loss.item() * rows[:, 1:].numel()
            count += rows[:, 1:].numel()
        return total / count

    # -- the interface -----------------------------------------------------------------------------

    def _reweighted(self, hard, per_token, targets, stats: Stats, prefix: str = "") -> torch.Tensor:
        """objective.reweight: the cross-entropy with each row weighted by its loss (reweight.py)."""
        if self.cfg.reweight == "none":
            return hard
        return reweighted(per_token, targets, IGNORE, self.cfg.reweight, self.cfg.reweight_temperature,
                          self.cfg.reweight_clip, stats, prefix)

    def _clm_loss(self, model, input_ids, targets, stats: Stats, prefix: str = "", doc_ids=None) -> torch.Tensor:
        input_ids, targets = input_ids.to(self.device), targets.to(self.device)
        doc_ids = None if doc_ids is None else doc_ids.to(self.device)
        forward = lambda: self.run_causal(model, input_ids, self.model_is_causal, doc_ids)  # noqa: E731
        need_logits = bool(self.teachers) or self.cfg.reweight != "none"  # reweighting: per-token losses with gradients
        if self.cfg.mtp_heads > 1:
            hard, per_token, logits, extra = mtp.mtp_vocab_loss(model, forward, self.module, targets, IGNORE, self.cfg.mtp_weight,
                                                                need_logits, doc_ids, stats, prefix, self.loss_scale)
        else:  # fused head + loss on CUDA
            (hard, per_token, logits), extra = ops.vocab_loss(model, forward, targets, IGNORE, need_logits=need_logits), None
        hard = self._reweighted(hard, per_token, targets, stats, prefix)
        loss = self._with_teachers(hard, logits, input_ids, targets, causal=True, stats=stats, prefix=prefix, doc_ids=doc_ids)
        if extra is None:
            return loss
        stats[f"{prefix}mtp_main_loss"] = loss.item()
        return (loss + extra) / self.cfg.mtp_heads

    def train_loss(self, model, input_ids: torch.Tensor, targets: torch.Tensor, step: int,
                   doc_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, Stats]:
        stats: Stats = {}
        return self._clm_loss(model, input_ids, targets, stats, doc_ids=doc_ids), stats

    @torch.no_grad()
    def evaluate(self, model, batches: list[torch.Tensor], autocast: Callable, doc_ids=None) -> dict[str, float]:
        return {"dev_loss": self._dev_causal(model, batches, autocast, doc_ids)}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the generator state and the adaptive loss EMA (base64 bytes)."""
        state = {"name": self.name, "generator": _encode_tensor(self.generator.get_state())}
        if self.loss_ema is not None:
            state["loss_ema"] = _encode_tensor(self.loss_ema)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(_decode_tensor(state["generator"]))
        if self.loss_ema is not None and "loss_ema" in state:
            self.loss_ema = _decode_tensor(state["loss_ema"])


class CLM(Objective):
    name = "clm"


class Distill(CLM):
    name = "distill"


class MLM(Objective):
    name = "mlm"
    generates = False

    def train_loss(self, model, input_ids, targets, step, doc_ids=None):
        stats: Stats = {}
        loss = self._masked_loss(model, input_ids, self.mask_rate(step), self.generator, shifted=False,
                                 adaptive=self.cfg.adaptive, stats=stats, doc_ids=doc_ids)
        return loss, stats

    @torch.no_grad()
    def evaluate(self, model, batches, autocast, doc_ids=None):
        return {"dev_loss": self._dev_masked(model, batches, autocast, shifted=False, doc_ids=doc_ids)}


class Hybrid(Objective):
    """GPT-BERT: causal rows (next token) and masked rows (MNTP) in one model."""

    name = "hybrid"

    def causal_rows(self, batch_size: int) -> int:
        return round(self.cfg.causal_share * batch_size)

    def causal_step(self, step: int) -> bool:
        """steps mode: step s is causal when floor((s + 1) * share) > floor(s * share), so exactly
        floor(N * share) of the first N steps are causal, spread evenly (share 0.5 alternates)."""
        share = self.cfg.causal_share
        return math.floor((step + 1) * share) > math.floor(step * share)

    def train_loss(self, model, input_ids, targets, step, doc_ids=None):
        stats: Stats = {}
        rate = self.mask_rate(step)
        if self.cfg.hybrid_mode == "steps":
            if self.causal_step(step):
                loss = self._clm_loss(model, input_ids, targets, stats, doc_ids=doc_ids)
                stats.update(clm_loss=loss.item(), causal_share=1.0)
            else:
                loss = self._masked_loss(model, input_ids, rate, self.generator, True, self.cfg.adaptive, stats,
                                         doc_ids=doc_ids)
                stats.update(mntp_loss=loss.item(), causal_share=0.0)
            return loss, stats
        B = input_ids.shape[0]
        n_c = self.causal_rows(B)
        parts = []
        if n_c > 0:
            clm = self._clm_loss(model, input_ids[:n_c], targets[:n_c], stats, prefix="clm_",
                                 doc_ids=None if doc_ids is None else doc_ids[:n_c])
            stats["clm_loss"] = clm.item()
            parts.append(clm * (n_c / B))
        if n_c < B:
            mntp = self._masked_loss(model, input_ids[n_c:], rate, self.generator, True, self.cfg.adaptive, stats,
                                     doc_ids=None if doc_ids is None else doc_ids[n_c:])
            stats["mntp_loss"] = mntp.item()
            parts.append(mntp * ((B - n_c) / B))
        stats["causal_share"] = n_c / B
        return sum(parts), stats

    @torch.no_grad()
    def evaluate(self, model, batches, autocast, doc_ids=None):
        return {"dev_loss": self._dev_causal(model, batches, autocast, doc_ids),
                "dev_mntp_loss": self._dev_masked(model, batches, autocast, shifted=True, doc_ids=doc_ids)}


CLASSES = {"clm": CLM, "mlm": MLM, "hybrid": Hybrid, "distill": Distill}  # + bootstrap (tinylm/train/bootstrap.py)


# --------------------------------------------------------------------------------------------------
# building, with every check of the config


def check_config(cfg: ObjectiveConfig, model_is_causal: bool) -> None:
    if cfg.name not in OBJECTIVES:
        raise InputError(f"objective.name={cfg.name!r} is not an objective; use one of {', '.join(OBJECTIVES)}")
    if cfg.name in ("mlm", "bootstrap") and model_is_causal:
        raise InputError(f"objective={cfg.name} needs a bidirectional model; use model=bert_tiny (or another bert_*)")
    if cfg.name == "hybrid" and model_is_causal:
        raise InputError("objective=hybrid trains one model both causally and bidirectionally; use model=bert_*")
    if cfg.name in ("mlm", "hybrid", "bootstrap"):
        for key in ("mask_rate_start", "mask_rate_end"):
            if not 0.0 < getattr(cfg, key) < 1.0:
                raise InputError(f"objective.{key}={getattr(cfg, key)} must be in (0, 1)")
        if cfg.masking not in MASKINGS:
            raise InputError(f"objective.masking={cfg.masking!r} is not a masking; use one of {', '.join(MASKINGS)}")
        if cfg.mask_token_prob < 0 or cfg.random_token_prob < 0 or cfg.mask_token_prob + cfg.random_token_prob > 1:
            raise InputError("objective.mask_token_prob and objective.random_token_prob must be >= 0 and sum to at most 1")
        if cfg.masking == "span" and (cfg.span_mean < 1 or cfg.span_max < 1):
            raise InputError("objective.span_mean and objective.span_max must be >= 1")
        if cfg.adaptive and cfg.masking != "token":
            raise InputError("objective.adaptive=true weights single tokens; use it with objective.masking=token")
        if not 0.0 <= cfg.adaptive_decay < 1.0:
            raise InputError(f"objective.adaptive_decay={cfg.adaptive_decay} must be in [0, 1)")
    if cfg.name == "hybrid":
        if not 0.0 <= cfg.causal_share <= 1.0:
            raise InputError(f"objective.causal_share={cfg.causal_share} must be in [0, 1]")
        if cfg.hybrid_mode not in HYBRID_MODES:
            raise InputError(f"objective.hybrid_mode={cfg.hybrid_mode!r} is not a mode; use one of {', '.join(HYBRID_MODES)}")
    check_options(cfg)
    if cfg.name == "distill" and not cfg.teachers:
        raise InputError("objective=distill needs teachers: objective.teachers=[runs/teacher_a,...] (tinylm run directories)")
    if cfg.teachers:
        if cfg.distill_temperature <= 0:
            raise InputError(f"objective.distill_temperature={cfg.distill_temperature} must be > 0")
        if not 0.0 <= cfg.distill_alpha <= 1.0:
            raise InputError(f"objective.distill_alpha={cfg.distill_alpha} must be in [0, 1]")


def build_objective(cfg: ObjectiveConfig, model, vocab_size: int, total_steps: int, seed: int,
                    device: torch.device, tokenizer=None) -> Objective:
    model_is_causal = bool(getattr(model, "causal", True))
    check_config(cfg, model_is_causal)
    n_layer = mtp.base_module(model).cfg.n_layer
    if cfg.name == "bootstrap" and any(not -n_layer <= l < n_layer for l in cfg.bootstrap_layers):
        raise InputError(f"objective.bootstrap_layers={list(cfg.bootstrap_layers)} names a layer the model does not have; "
                         f"use indices in [-{n_layer}, {n_layer - 1}] (-1: the last)")
    teachers = load_teachers(cfg, vocab_size, tokenizer, device) if cfg.teachers else []
    if cfg.name == "bootstrap":  # imported here: the module builds on the classes above
        from tinylm.train.bootstrap import Bootstrap

        return Bootstrap(cfg, model, vocab_size, total_steps, seed, device, teachers)
    return CLASSES[cfg.name](cfg, model, vocab_size, total_steps, seed, device, teachers)
