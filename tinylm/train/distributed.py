"""More than one process: torchrun's process group, rank helpers, the data share of each rank, and
the model wrapping (DDP, or FSDP2 with `train.strategy=fsdp`).

Launched by torchrun (`torchrun --nproc_per_node=N -m tinylm.pretrain ...`, `make pretrain NPROC=N`)
every rank runs the same training loop. What keeps the ranks consistent:

- **Data.** Every rank holds the same loader, built for the *global* batch (train.batch_size x world
  size windows) and stepped identically, so its position is one state for the whole job. Rank r
  trains on rows [r*b, (r+1)*b) of each global batch (a disjoint share); the words seen are those
  of the whole global batch, so word counts, milestones and the 10-epoch compliance are exact, and
  2 ranks x batch b read exactly the windows of 1 process x batch 2b.
- **Randomness.** Rank r seeds torch and its objective (masking) from `rank_seed(seed, r)`; rank 0
  uses the seed itself, so a one-process run is unchanged. DDP broadcasts rank 0's initial weights.
- **Writing.** Only rank 0 writes the run directory (config, logs, metrics, checkpoints,
  milestones, samples, summary); the other ranks' RNG and objective states travel to it for the
  checkpoint (`gather_rank_states`).
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from tinylm.errors import InputError

STRATEGIES = ("ddp", "fsdp")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False  # a process group exists (launched by torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's value of a picklable object, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: list[float]) -> list[float]:
        """The mean over ranks of each value (float64, so the mean is exact to the last bit that matters)."""
        if not self.active or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return (t / self.world).tolist()


def launched_by_torchrun() -> bool:
    _adopt_slurm_tasks()
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _adopt_slurm_tasks() -> None:
    """A submitit SLURM job with several tasks (conf/hydra/launcher/slurm_gpu.yaml: one per GPU) is
    started like torchrun: submitit's own helper exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT."""
    if "RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def rank_seed(seed: int, rank: int) -> int:
    """Rank r's seed: the run's seed on rank 0, a distinct (seed, rank)-derived seed elsewhere."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7919) % (2**63 - 1)


def setup(device_name: str, strategy: str) -> tuple[Dist, str]:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA); returns (Dist, device name).
    Without torchrun: a one-process Dist and the device name unchanged."""
    if strategy not in STRATEGIES:
        raise InputError(f"train.strategy={strategy!r} is not a strategy; use ddp or fsdp")
    if not launched_by_torchrun():
        if strategy == "fsdp":
            raise InputError("train.strategy=fsdp shards the model over torchrun's processes; launch with "
                             "torchrun --nproc_per_node=N -m tinylm.pretrain ... (make pretrain NPROC=N)")
        return Dist(), device_name
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); lower "
                             "--nproc_per_node to the GPUs of a node, or use train.device=cpu")
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=10))
    if rank != 0:  # one console: the other ranks report only warnings and errors
        logging.getLogger("tinylm").setLevel(logging.WARNING)
    return Dist(rank, world, local_rank, active=True), device_name


def teardown(ctx: Dist) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


class RankShare:
    """Rank r's rows of the loader's global batch (see the module docstring); the loader's interface."""

    def __init__(self, loader, ctx: Dist):
        self.loader, self.ctx = loader, ctx

    def next_batch(self):
        batch = self.loader.next_batch()
        n = batch.input_ids.shape[0]
        if n % self.ctx.world:
            raise InputError(f"a global batch of {n} rows does not split over {self.ctx.world} ranks; pick train.batch_size "
                             "and curriculum bucket lengths so that every batch has a multiple of the world size rows")
        share = n // self.ctx.world
        lo, hi = self.ctx.rank * share, (self.ctx.rank + 1) * share
        # Every per-row tensor of the batch is cut; counts (words) stay those of the global batch.
        cut = {f.name: getattr(batch, f.name)[lo:hi] for f in fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).shape[:1] == (n,)}
        return replace(batch, **cut)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def observe_loss(self, loss: float):  # the mean loss over the ranks: every rank switches alike
        return self.loader.observe_loss(loss)

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


def wrap_model(model: torch.nn.Module, ctx: Dist, strategy: str, device: torch.device, bf16: bool) -> torch.nn.Module:
    """The module the loop trains through: the model itself (one process), DDP, or the model sharded
    in place by FSDP2 (`fully_shard` on each block, then the root)."""
    if not ctx.active:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # bf16 compute with fp32 gradient reduction and fp32 master weights (the optimizer's).
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in _blocks(model):
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers of a model (every family keeps them in one ModuleList)."""
    lists = [m for m in model.children() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


# -- per-rank state in checkpoints ----------------------------------------------------------------

def gather_rank_states(ctx: Dist, objective) -> list[dict] | None:
    """Every rank's torch RNG and objective state (for rank 0's checkpoint); None in one process."""
    if not ctx.active:
        return None
    mine = {"rng_torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(), "objective": objective.state_dict()}
    return ctx.gather(mine)


def restore_rank_state(ctx: Dist, state: dict, objective) -> None:
    """Check the world size of a checkpoint and restore this rank's RNG and objective state."""
    saved_world = state.get("world_size", 1)
    if saved_world != ctx.world:
        raise InputError(f"checkpoint at step {state['step']} was written by {saved_world} process(es), this launch has "
                         f"{ctx.world}; resume with the same number (torchrun --nproc_per_node={saved_world}, or no "
                         "torchrun for 1): the global batch and the per-rank data and random streams depend on it")
    ranks = state.get("ranks")
    if ranks is None:
        return
    mine = ranks[ctx.rank]
    raw = bytearray(base64.b64decode(mine["rng_torch"]))
    torch.set_rng_state(torch.frombuffer(raw, dtype=torch.uint8).clone())
    objective.load_state_dict(mine["objective"])


class NoMetrics:
    """MetricsLog's interface on ranks other than 0, which write nothing."""

    def log(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def no_sync(train_model, last: bool):
    """DDP reduces gradients once per optimizer step: not after the earlier micro-batches of grad_accum."""
    import contextlib

    if last or not hasattr(train_model, "no_sync"):
        return contextlib.nullcontext()
    return train_model.no_sync()


def broadcast_module(module: torch.nn.Module | None, ctx: Dist) -> None:
    """Rank 0's weights in a module DDP does not hold (an objective's own: MTP heads, the bootstrap
    predictor), on every rank: each rank initialised it from its own random stream."""
    if not ctx.active or module is None:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_grads(params: list[torch.Tensor], ctx: Dist) -> None:
    """Average the gradients of parameters DDP does not hold (an objective's own modules: MTP heads,
    the bootstrap predictor) over the ranks, as DDP does for the model's."""
    if not ctx.active or not params:
        return
    # A parameter may have no gradient on one rank and one on another (an MTP head on a step of
    # masked rows only is idle everywhere; a rank without masked tokens is not): agree first.
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    for p, anywhere in zip(params, has.tolist()):
        if anywhere:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world)


# -- FSDP2: sharded checkpoints during training, consolidated weights for everything else ---------

def dcp_dir(ckpt: Path) -> Path:
    """The torch.distributed.checkpoint folder (sharded model + optimizer) beside checkpoints/step_N."""
    return ckpt.with_name(ckpt.name + ".dcp")


def save_sharded(ckpt: Path, model: torch.nn.Module, optimizer, ctx: Dist) -> None:
    """Every rank writes its shards of the model and the optimizer (collective). Written before rank 0
    renames step_N into place, so a complete step_N always has its .dcp."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if ctx.is_main:  # the run directory's folders are rank 0's to make
        dcp_dir(ckpt).mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(dcp_dir(ckpt)))


def load_sharded(ckpt: Path, model: torch.nn.Module, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not dcp_dir(ckpt).is_dir():
        raise InputError(f"{ckpt} has no sharded state ({dcp_dir(ckpt).name}): it was not written with train.strategy=fsdp; "
                         "resume it with the strategy it was trained with")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(dcp_dir(ckpt)))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def prune_sharded(run_dir: Path) -> None:
    """Drop the .dcp folders whose checkpoint was pruned (or never completed, older than the newest)."""
    import shutil

    root = Path(run_dir) / "checkpoints"
    for d in root.glob("step_*.dcp") if root.is_dir() else []:
        if not (root / d.name.removesuffix(".dcp") / "state.json").exists():
            shutil.rmtree(d, ignore_errors=True)


def consolidated(model: torch.nn.Module, ctx: Dist, copy: torch.nn.Module | None) -> torch.nn.Module | None:
    """Rank 0's full CPU copy of a sharded model, refreshed from the shards (collective on every rank);
    what checkpoints' model.safetensors, milestones and samples are written from."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ctx.is_main and copy is not None:
        copy.load_state_dict(full)
    return copy
