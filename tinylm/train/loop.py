"""The one training loop: data -> model -> optimizer -> steps, dev loss, checkpoints, samples.

Order of work inside a step boundary is fixed (log, evaluate, sample, checkpoint), and evaluation
and sampling draw no numbers from the global RNG, so a run resumed from a checkpoint continues
exactly like the uninterrupted run (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from tinylm import ops
from tinylm.config import ModelConfig, PretrainConfig, validate_pretrain
from tinylm.data.loader import dev_windows, make_loader
from tinylm.data.pipeline import PreparedData, prepare_data
from tinylm.data.tokenizer import MASK_ID, PAD_ID
from tinylm.eval.scoring import masked_scores
from tinylm.errors import InputError
from tinylm.logs import attach_run_log, detach_run_log, progress_bar_wanted, step_line
from tinylm.models import build_model
from tinylm.train import distributed
from tinylm.train.checkpoint import NonFiniteWeights, load_checkpoint, newest_intact, read_state, save_checkpoint
from tinylm.train.devices import Precision, check_kernels, resolve_device
from tinylm.train.eval_during import TaskTracker, plot_eval_curve
from tinylm.train.guard import RunStopped, StepGuard, StopSignals
from tinylm.train.metrics import MetricsLog, plot_loss_curve, read_metrics, truncate_metrics
from tinylm.train.milestones import MilestoneWriter, crossed
from tinylm.train.objectives import Objective, build_objective
from tinylm.train.optim import build_optimizer, lr_at
from tinylm.rerun import write_overrides
from tinylm.train.resume import check_resume_inputs, find_resume_checkpoint, run_identity, set_aside_newer
from tinylm.train.runlock import RunLock
from tinylm.train.threads import set_threads
from tinylm.utils import sweep_leftovers, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s by device name, for MFU (None elsewhere: MFU is then not reported).
_PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in _PEAK_BF16_FLOPS.items() if k in name), None)


def _drop_empty_dir(path: Path, keep: Path) -> None:
    """A non-zero rank's Hydra made its own (empty) run directory before rank 0's was agreed on."""
    if path.resolve() != keep.resolve() and path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def steps_for_epochs(tc, train_tokens: int) -> int:
    """Optimizer steps that visit the train split's windows `tc.epochs` times (the loader drops each
    epoch's ragged tail, so the words seen stay within epochs x the split's words)."""
    rows_per_epoch = (train_tokens - 1) // tc.seq_len
    steps = int(tc.epochs * rows_per_epoch // (tc.batch_size * tc.grad_accum))
    if steps < 1:
        raise InputError(f"train.epochs={tc.epochs:g} is less than one step of {tc.batch_size * tc.grad_accum} rows over "
                         f"{rows_per_epoch:,} windows; raise train.epochs or lower train.batch_size")
    return steps


def check_model_config(ckpt: Path, requested: ModelConfig) -> None:
    # Keys a checkpoint lacks were added to ModelConfig later: they count as their defaults.
    saved = asdict(ModelConfig()) | read_state(ckpt)["model_config"]
    diff = {k: (saved[k], v) for k, v in asdict(requested).items() if saved[k] != v}
    if diff:
        shown = ", ".join(f"model.{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in sorted(diff.items()))
        raise InputError(f"checkpoint {ckpt} was trained with a different model ({shown}); drop those overrides or start a new run")


@torch.no_grad()
def evaluate(model, objective: Objective, batches: list[torch.Tensor], autocast, doc_ids=None) -> dict[str, float]:
    """The objective's dev losses (nats per scored token) over fixed dev windows: {"dev_loss": ...}."""
    model.eval()
    out = objective.evaluate(model, batches, autocast, doc_ids)
    model.train()
    return out


@torch.no_grad()
def write_samples(model, data: PreparedData, prompts: list[str], n_tokens: int, seed: int, step: int, path: Path, device,
                  objective: Objective | None = None) -> None:
    """Append one continuation per prompt to samples.txt (own RNG: the training stream is untouched).
    A masked model (objective=mlm) cannot generate: its lines hold the prompts' pseudo-log-likelihoods."""
    model.eval()
    tok = data.tokenizer
    generator = torch.Generator(device=device).manual_seed(seed)
    lines = [f"## step {step}"]
    for prompt in prompts:
        ids = torch.tensor([[tok.bos_id, *tok.encode([prompt])[0]]], device=device)
        if objective is not None and not objective.generates:  # scored as the evaluation scores it
            n = ids.shape[1] - 1
            (pll,) = masked_scores(model, [(ids[0, 1:].tolist(), [True] * n)], "pll", MASK_ID, PAD_ID,
                                   prefix=(tok.bos_id,), device=device)
            lines.append(f"{prompt} >>> PLL {pll:.2f} nats over {n} tokens ({pll / max(n, 1):.3f} per token)")
            continue
        out = model.generate(ids, n_tokens, temperature=0.8, top_k=50, eos_id=tok.eos_id, generator=generator)
        new = [i for i in out[0, ids.shape[1] :].tolist() if i != tok.eos_id]
        lines.append(f"{prompt} >>> {tok.decode(new)}")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    model.train()


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train a model as `cfg` says; returns the run summary (also written to summary.json).
    One process per run directory (RunLock, held by rank 0); in a single process, stop signals end
    the run after a checkpoint (StopSignals; under torchrun the ranks keep the default handlers)."""
    validate_pretrain(cfg)
    tc = cfg.train
    # Under torchrun: join the process group; rank 0 alone writes (tinylm/train/distributed.py).
    ctx, device_name = distributed.setup(tc.device, tc.strategy)
    try:
        with RunLock(cfg.run_dir) if ctx.is_main else contextlib.nullcontext(), StopSignals(install=not ctx.active) as stop:
            summary = _pretrain(cfg, ctx, device_name, stop)
        # Only on success (after an error the other ranks may never arrive): no rank closes its gloo
        # connections while another still finishes its last collective, which aborted that rank (SIGABRT).
        ctx.barrier()
        return summary
    finally:
        distributed.teardown(ctx)


def _pretrain(cfg: PretrainConfig, ctx: distributed.Dist, device_name: str, stop: StopSignals) -> dict[str, Any]:
    tc = cfg.train
    run_dir = Path(ctx.broadcast(cfg.run_dir))  # each rank's Hydra stamped its own time
    if ctx.active and not ctx.is_main:
        _drop_empty_dir(Path(cfg.run_dir), keep=run_dir)
    # Validate everything that can be wrong before writing a single byte into the run directory.
    resume_ckpt = find_resume_checkpoint(tc.resume, run_dir)
    guard = StepGuard(tc.max_bad_steps, tc.on_divergence if not ctx.active else "stop", tc.rollback_lr_factor)
    device = resolve_device(device_name.split(":")[0])
    if device.type == "cuda" and ctx.active:
        device = torch.device(device_name)
    ops.set_default_backend(cfg.kernels, device)
    check_kernels(device, cfg.kernels)
    precision = Precision(device, tc.precision)  # autocast, loss scaling (fp16), the optimizer step
    autocast = precision.autocast
    if precision.scaler.is_enabled() and ctx.active and tc.strategy == "fsdp":
        raise InputError("train.precision=fp16 (loss scaling) is not supported with train.strategy=fsdp; use bf16 or ddp")
    log.info(set_threads(tc.threads, device))
    if tc.seq_len > cfg.model.max_seq_len:
        raise InputError(f"train.seq_len={tc.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}; raise one or lower the other")
    torch.manual_seed(tc.seed)  # the same initial weights on every rank (FSDP shards each rank's own)
    if not ctx.is_main:  # rank 0 builds the data cache; the others then read it
        ctx.barrier()
    data = prepare_data(cfg.data, cfg.tokenizer)
    if ctx.is_main:
        ctx.barrier()
    if tc.epochs > 0:
        tc = replace(tc, steps=steps_for_epochs(replace(tc, batch_size=tc.batch_size * ctx.world), len(data.train.tokens)))
        cfg = replace(cfg, train=tc)
        log.info(f"train.epochs={tc.epochs:g}: {tc.steps:,} steps")
    if cfg.model.vocab_size not in (0, data.tokenizer.vocab_size):
        raise InputError(f"model.vocab_size={cfg.model.vocab_size} differs from the tokenizer's {data.tokenizer.vocab_size}; leave it 0")
    model_cfg = replace(cfg.model, vocab_size=data.tokenizer.vocab_size)
    data_changes = []
    if resume_ckpt is not None:
        check_model_config(resume_ckpt, model_cfg)
        data_changes = check_resume_inputs(resume_ckpt, run_dir, data.report, tc.seq_len, tc.resume_data)
    try:
        model = build_model(model_cfg).to(device)
    except ValueError as e:
        raise InputError(str(e)) from None
    if ctx.rank:  # from here on, each rank its own random stream
        torch.manual_seed(distributed.rank_seed(tc.seed, ctx.rank))
    sharded = ctx.active and tc.strategy == "fsdp"
    if sharded and resume_ckpt is not None:  # FSDP shards the (consolidated) weights the checkpoint holds
        load_checkpoint(resume_ckpt, model, optimizer=None)
    # DDP, or FSDP2 sharding the model in place (before the optimizer sees its parameters), or the model.
    train_model = distributed.wrap_model(model, ctx, tc.strategy, device, precision.dtype == torch.bfloat16)
    snapshot = build_model(model_cfg) if sharded and ctx.is_main else None  # rank 0's full CPU copy (FSDP)
    sample_device = torch.device("cpu") if sharded else device
    if sharded and (cfg.objective.mtp_heads > 1 or cfg.objective.name == "bootstrap"):
        raise InputError("objective.mtp_heads > 1 and objective=bootstrap keep weights beside the model, which "
                         "train.strategy=fsdp does not shard; use train.strategy=ddp")
    objective = build_objective(cfg.objective, model, model_cfg.vocab_size, tc.steps, distributed.rank_seed(tc.seed, ctx.rank),
                                device, data.tokenizer)
    distributed.broadcast_module(objective.module, ctx)  # as DDP does for the model
    optimizer = build_optimizer(model, cfg.optim, extra=objective.module)  # + the objective's own trained weights
    trained = [*model.parameters(), *objective.trainable_parameters()]
    try:
        # One loader for the global batch; each rank trains on its share of the rows.
        loader = make_loader(data.train, cfg.curriculum, tc.seq_len, tc.batch_size * ctx.world, tc.seed,
                             data.tokenizer.word_start_table(), tc.steps, tc.grad_accum, tc.doc_mask)
        if ctx.active:
            loader = distributed.RankShare(loader, ctx)
        dev_batches, dev_docs = dev_windows(data.dev.tokens, tc.seq_len, tc.eval_batches, tc.batch_size * ctx.world,
                                            data.dev.docs[:, 0] if tc.doc_mask else None)
    except ValueError as e:
        raise InputError(str(e)) from None

    step, tokens_seen, words_seen = 0, 0, 0
    if resume_ckpt is not None:
        if sharded:  # weights loaded above; optimizer from the shards; RNG per rank below
            state = read_state(resume_ckpt)
            distributed.load_sharded(resume_ckpt, model, optimizer)
        else:
            state = load_checkpoint(resume_ckpt, model, optimizer, extra=objective.module)
        step, tokens_seen, words_seen = state["step"], state["tokens_seen"], state["words_seen"]
        loader.load_state_dict(state["loader"])
        if "objective" in state:
            objective.load_state_dict(state["objective"])
        distributed.restore_rank_state(ctx, state, objective)
        precision.load_state_dict(state.get("grad_scaler"))
        log.info(f"resuming from {resume_ckpt} (step {step})")
    # minimal pairs scored at each milestone (rank 0, which writes the milestones)
    tracker = (TaskTracker(tc.eval_tasks, tc.eval_tasks_max_items, cfg.objective.name, data.tokenizer, sample_device,
                           tc.seq_len) if tc.eval_tasks and ctx.is_main else None)
    milestones = MilestoneWriter(run_dir, snapshot if sharded else model, model_cfg, tc.milestones and ctx.is_main,
                                 tc.milestone_unit_words, words_seen,
                                 data.report, data.tokenizer.model_file)

    # From here on the run directory is written (by rank 0 only).
    full_config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        attach_run_log(run_dir)
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "milestones"):
            for line in sweep_leftovers(folder):
                log.warning(f"cleanup: {line}")
        if resume_ckpt is not None:
            set_aside_newer(run_dir, resume_ckpt)
        config_name = "config.yaml" if resume_ckpt is None else f"config.resumed_at_{step}.yaml"
        write_atomic(run_dir / config_name, OmegaConf.to_yaml(full_config))
        write_overrides(run_dir, config_name)
        write_json_atomic(run_dir / "data_report.json", data.report)
        # The run directory is self-contained: evaluation and export need no cache.
        write_atomic(run_dir / "tokenizer.model", data.tokenizer.model_file.read_bytes())
        metrics = MetricsLog(run_dir, cfg.logger, full_config, resume_step=step if resume_ckpt is not None else None)
    else:
        metrics = distributed.NoMetrics()

    train_model = torch.compile(train_model) if tc.compile else train_model
    eval_model = model if ctx.active and not sharded else train_model  # DDP's forward is collective
    model.train()
    tokens_per_step = tc.batch_size * tc.grad_accum * tc.seq_len * ctx.world  # all ranks
    flops_per_step = model.flops_per_token(tc.seq_len) * tokens_per_step
    peak = peak_flops(device)
    n_params = model.num_params()
    log.info(f"run directory: {run_dir}")
    log.info(f"model: {model_cfg.family} {n_params / 1e6:.2f}M non-embedding parameters, vocab {model_cfg.vocab_size}; "
             f"data: {data.report['words_train']:,} train words, {data.report['tokens_train']:,} tokens; device {device}, "
             f"{precision.name}" + (f"; {ctx.world} processes ({tc.strategy})" if ctx.active else ""))

    def checkpoint() -> None:
        ranks = distributed.gather_rank_states(ctx, objective)  # collective: every rank takes part
        if sharded:
            distributed.save_sharded(run_dir / "checkpoints" / f"step_{step:08d}", model, optimizer, ctx)
            distributed.consolidated(model, ctx, snapshot)
        if not ctx.is_main:
            return
        try:
            save_checkpoint(run_dir, step, snapshot if sharded else model, None if sharded else optimizer, {
                "tokens_seen": tokens_seen, "words_seen": words_seen, "loader": loader.state_dict(),
                "objective": objective.state_dict(), "grad_scaler": precision.state_dict(),
                "model_config": asdict(model_cfg),
                "bad_steps_skipped": guard.bad_total, **run_identity(data.report, tc.seq_len, data_changes),
                **({"world_size": ctx.world, "strategy": tc.strategy, "ranks": ranks} if ranks else {}),
            }, keep=tc.keep_checkpoints, extra=objective.module)
        except NonFiniteWeights as e:
            raise InputError(f"training diverged: {e}; last good checkpoint: {newest_intact(run_dir)}; lower optim.lr "
                             "and resume from it") from None
        if sharded:
            distributed.prune_sharded(run_dir)

    progress = None
    if progress_bar_wanted(tc.progress) and ctx.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    dev_loss = None
    interval_start, interval_tokens = time.perf_counter(), 0
    run_start_tokens, run_start = tokens_seen, time.perf_counter()
    while step < tc.steps:
        lr = lr_at(step, tc.steps, cfg.optim) * guard.lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, stat_sums = 0.0, {}
        if precision.scaler.is_enabled():  # fp16: the scale MTP's inner backward runs at (the loop syncs per step anyway)
            objective.loss_scale = precision.scaler.get_scale()
        for micro in range(tc.grad_accum):
            batch = loader.next_batch()
            with distributed.no_sync(train_model, last=micro == tc.grad_accum - 1):
                with autocast():
                    loss, stats = objective.train_loss(train_model, batch.input_ids, batch.targets, step, batch.doc_ids)
                precision.backward(loss / tc.grad_accum)
            loss_sum += loss.item()
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + v
            words_seen += batch.words
        loss_value = loss_sum / tc.grad_accum
        distributed.average_grads(objective.trainable_parameters(), ctx)  # DDP averages only the model's
        if ctx.active:  # the logged loss and stats are the means over all ranks (= the global batch's for clm)
            loss_value, *means = ctx.mean([loss_value, *stat_sums.values()])
            stat_sums = dict(zip(stat_sums, means))
        # With grad_clip <= 0 the norm is still computed (for the log) but nothing is clipped.
        grad_norm = precision.unscale_and_clip(optimizer, trained, cfg.optim.grad_clip)
        norm = float(getattr(grad_norm, "full_tensor", lambda: grad_norm)())  # the same on every rank
        # Under fp16 loss scaling an overflowing gradient is routine: the scaler skips that step and
        # lowers its scale, so the guard then judges the loss alone.
        if not guard.ok(loss_value, 0.0 if precision.scaler.is_enabled() else norm):  # a NaN/inf step is skipped
            optimizer.zero_grad(set_to_none=True)
            precision.skip()
            last_good = newest_intact(run_dir)
            if guard.skipped(step + 1, loss_value, norm, last_good and str(last_good)) == "rollback":  # single process
                state = load_checkpoint(last_good, model, optimizer, extra=objective.module)
                loader.load_state_dict(state["loader"])
                if "objective" in state:
                    objective.load_state_dict(state["objective"])
                step, tokens_seen, words_seen = state["step"], state["tokens_seen"], state["words_seen"]
                truncate_metrics(run_dir / "metrics.jsonl", step)
                log.warning(f"rollback: reloaded {last_good} (step {step}); learning rate now x{guard.lr_scale:g}")
            continue
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        objective.after_step(model, step)  # e.g. the bootstrap teacher's EMA update
        tokens_seen += tokens_per_step
        interval_tokens += tokens_per_step
        switch = loader.observe_loss(loss_value)  # curriculum.seq_len_trigger=loss (tinylm/data/growlength.py)
        if sharded and crossed(milestones.words, words_seen, milestones.unit):
            distributed.consolidated(model, ctx, snapshot)
        written = milestones.update(step, tokens_seen, words_seen)  # before the checkpoint: a resume never skips one
        if tracker is not None and written:
            scored_at = time.perf_counter()
            metrics.log(tracker.row(snapshot if sharded else model, step, tokens_seen, words_seen,
                                    ",".join(p.name for p in written)))
            plot_eval_curve(run_dir, read_metrics(run_dir))
            interval_start += time.perf_counter() - scored_at  # tokens/s counts training only

        if step % tc.log_every == 0 or step == tc.steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            tokens_per_s = interval_tokens / max(now - interval_start, 1e-9)
            row = {"step": step, "tokens_seen": tokens_seen, "words_seen": words_seen, "loss": loss_value,
                   "lr": lr, "grad_norm": float(getattr(grad_norm, "full_tensor", lambda: grad_norm)()), "tokens_per_s": tokens_per_s}
            row.update({k: v / tc.grad_accum for k, v in stat_sums.items()})
            if peak:
                row["mfu"] = flops_per_step / tokens_per_step * tokens_per_s / peak / ctx.world
            if step % tc.eval_every == 0 or step == tc.steps:
                dev = evaluate(eval_model, objective, dev_batches, autocast, dev_docs)
                dev_loss = dev["dev_loss"]
                row.update(dev)
            metrics.log(row)
            log.info(step_line(row, tc.steps, time.perf_counter() - run_start, (tokens_seen - run_start_tokens) // tokens_per_step))
            if progress is not None:
                progress.set_postfix(loss=f"{loss_value:.3f}", dev=f"{dev_loss:.3f}" if dev_loss else "-", tok_s=f"{tokens_per_s:,.0f}")
            interval_start, interval_tokens = time.perf_counter(), 0
        elif step % tc.eval_every == 0:
            dev = evaluate(eval_model, objective, dev_batches, autocast, dev_docs)
            dev_loss = dev["dev_loss"]
            metrics.log({"step": step, "tokens_seen": tokens_seen, "words_seen": words_seen, **dev})
            log.info(step_line({"step": step, **dev}, tc.steps, time.perf_counter() - run_start, 0))
        if switch:
            metrics.log({"step": step, "tokens_seen": tokens_seen, "words_seen": words_seen, **switch})
            log.info(f"curriculum: seq_len {switch['seq_len']} from step {step + 1} ({switch['seq_len_switch']})")
        if tc.sample_every and step % tc.sample_every == 0 and step != tc.steps:
            if sharded:
                distributed.consolidated(model, ctx, snapshot)
            if ctx.is_main:
                write_samples(snapshot if sharded else model, data, list(tc.sample_prompts), tc.sample_tokens, tc.seed, step,
                              run_dir / "samples.txt", sample_device, objective)
        if step % tc.ckpt_every == 0 or step == tc.steps or stop.requested:
            checkpoint()
        if progress is not None:
            progress.update(1)
        if stop.requested:
            detach_run_log()
            raise RunStopped(f"stopped by {stop.requested} after step {step}; checkpoint {run_dir / 'checkpoints'}/step_{step:08d} "
                             "written; continue with train.resume=auto", stop.exit_code())
    if progress is not None:
        progress.close()

    elapsed = time.perf_counter() - run_start
    if dev_loss is None:  # resumed at the final step
        dev_loss = evaluate(eval_model, objective, dev_batches, autocast, dev_docs)["dev_loss"]
    if sharded:
        distributed.consolidated(model, ctx, snapshot)
    if not ctx.is_main:
        return {"run_dir": str(run_dir), "steps": step, "words_seen": words_seen, "final_dev_loss": dev_loss}
    write_samples(snapshot if sharded else model, data, list(tc.sample_prompts), tc.sample_tokens, tc.seed, step,
                  run_dir / "samples.txt", sample_device, objective)
    if tracker is not None:
        if tracker.last_step != step:
            metrics.log(tracker.row(snapshot if sharded else model, step, tokens_seen, words_seen, None))
        plot_eval_curve(run_dir, read_metrics(run_dir))
    metrics.close()
    summary = {
        "run_dir": str(run_dir), "steps": step, "tokens_seen": tokens_seen, "words_seen": words_seen,
        "final_dev_loss": dev_loss, "unigram_dev_loss": data.report["unigram_dev_loss"],
        "beats_unigram": dev_loss < data.report["unigram_dev_loss"],
        "tokens_per_s": (tokens_seen - run_start_tokens) / max(elapsed, 1e-9), "train_seconds": elapsed,
        "parameters": n_params,
    }
    write_json_atomic(run_dir / "summary.json", summary)
    plot_loss_curve(run_dir, data.report["unigram_dev_loss"])
    log.info(f"dev loss {dev_loss:.4f} nats/token (unigram baseline {data.report['unigram_dev_loss']:.4f}); "
          f"{summary['tokens_per_s']:,.0f} tokens/s; samples in {run_dir / 'samples.txt'}")
    log.info(f"run directory: {run_dir}")
    detach_run_log()
    return summary

