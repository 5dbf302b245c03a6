"""Data-parallel training on the CPU with the gloo backend: 2 processes spawned by the test.

The reference for DDP is one process with the global batch: 2 ranks x batch b read exactly the
windows of 1 process x batch 2b, so for the causal objective (a mean over equally many tokens per
rank) the losses and the weights must agree to float rounding.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ROOT, smoke_config
from safetensors.torch import load_file

from tinylm.errors import InputError
from tinylm.train.checkpoint import checkpoint_dirs, load_trained
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics

TEN_STEPS = ("train.steps=10", "train.ckpt_every=4", "train.keep_checkpoints=5", "train.eval_every=5", "train.log_every=1",
             "train.threads=1", "train.sample_every=0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forbid_writes_under(run_dir: str) -> None:
    """On ranks other than 0: any file opened for writing, folder made, renamed or removed in the
    run directory raises (audit hooks see every such call, including those of libraries); only
    FSDP's sharded checkpoint folders are written by every rank."""
    root = os.path.realpath(run_dir)

    def hook(event, args):
        if event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree") or (
                event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax+")):
            path = args[0]
            if not isinstance(path, (str, bytes, os.PathLike)):
                return
            path = os.path.realpath(os.fsdecode(path))
            # FSDP's sharded checkpoints (checkpoints/step_N.dcp) hold every rank's own shards, by design.
            if path.startswith(root) and ".dcp" not in path:
                raise AssertionError(f"rank {os.environ['RANK']} wrote {path} ({event})")

    sys.addaudithook(hook)


def _worker(rank: int, world: int, port: int, run_dir: str, cache_dir: str, overrides: tuple[str, ...]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = smoke_config(Path(run_dir), Path(cache_dir), *overrides)
    if rank != 0:
        _forbid_writes_under(run_dir)
    pretrain(cfg)


def run_ranks(run_dir: Path, cache_dir: Path, *overrides: str, world: int = 2) -> None:
    mp.spawn(_worker, args=(world, _free_port(), str(run_dir), str(cache_dir), overrides), nprocs=world, join=True)


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dirs(run_dir)[-1] / "model.safetensors"))


def _assert_same_run(a: Path, b: Path, tol: float) -> None:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == 10
    assert max(abs(x - y) for x, y in zip(la, lb)) <= tol, (la, lb)
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=tol, rtol=0, msg=k)
    words = [r["words_seen"] for r in read_metrics(a) if "loss" in r], [r["words_seen"] for r in read_metrics(b) if "loss" in r]
    assert words[0] == words[1]  # the words of every rank are counted, exactly


def test_ddp_two_ranks_match_one_process_with_the_global_batch_and_resume_exactly(tmp_path, cache_dir):
    one = tmp_path / "one"
    pretrain(smoke_config(one, cache_dir, *TEN_STEPS, "train.batch_size=8"))
    ddp = tmp_path / "ddp"
    run_ranks(ddp, cache_dir, *TEN_STEPS, "train.batch_size=4")  # rank 1 may not write (audit hook)
    _assert_same_run(ddp, one, tol=1e-6)
    assert [p.name for p in checkpoint_dirs(ddp)] == ["step_00000004", "step_00000008", "step_00000010"]

    # Cut the run back to its step-4 checkpoint, as if it had been interrupted there, and resume.
    cut = tmp_path / "cut"
    shutil.copytree(ddp, cut)
    for ckpt in checkpoint_dirs(cut)[1:]:
        shutil.rmtree(ckpt)
    (cut / "summary.json").unlink()
    run_ranks(cut, cache_dir, *TEN_STEPS, "train.batch_size=4", "train.resume=auto")
    _assert_same_run(cut, ddp, tol=0.0)  # bit for bit

    # Another world size: one clear error, nothing written.
    before = sorted(p.name for p in cut.rglob("*"))
    with pytest.raises(InputError, match=r"written by 2 process\(es\), this launch has 1; resume with the same number"):
        pretrain(smoke_config(cut, cache_dir, *TEN_STEPS, "train.batch_size=4", "train.resume=auto"))
    assert sorted(p.name for p in cut.rglob("*")) == before


def _rank_pid(parent: int, local_rank: int) -> int | None:
    """The worker of a torchrun agent with the given LOCAL_RANK (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_dying_rank_fails_the_torchrun_job_naming_the_rank_and_the_last_checkpoint_loads(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tinylm.pretrain",
           "debug=cpu_smoke", "train.steps=100000", "train.ckpt_every=2", "train.eval_every=1000", "train.threads=1",
           f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 240
        while not checkpoint_dirs(run_dir) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert checkpoint_dirs(run_dir), "no checkpoint was written"
        victim = _rank_pid(proc.pid, local_rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out), out[-3000:]
    model, _, state = load_trained(run_dir)  # the newest complete checkpoint loads
    assert state["step"] >= 2 and state["world_size"] == 2


def test_fsdp_two_ranks_match_one_process_and_write_consolidated_safetensors(tmp_path, cache_dir):
    one = tmp_path / "one"
    pretrain(smoke_config(one, cache_dir, *TEN_STEPS, "train.batch_size=8", "train.milestone_unit_words=100"))
    fsdp = tmp_path / "fsdp"
    run_ranks(fsdp, cache_dir, *TEN_STEPS, "train.batch_size=4", "train.strategy=fsdp", "train.milestone_unit_words=100")
    _assert_same_run(fsdp, one, tol=1e-6)  # the consolidated model.safetensors hold the same weights
    ckpts = checkpoint_dirs(fsdp)
    assert all((c.parent / (c.name + ".dcp") / ".metadata").exists() for c in ckpts)  # torch.distributed.checkpoint
    # Milestones (words seen 100, 200, ...) come from the consolidated weights, like a one-process run's.
    milestones = sorted(p.name for p in (fsdp / "milestones").iterdir())
    assert milestones == sorted(p.name for p in (one / "milestones").iterdir()) and milestones
    for name in milestones:
        a, b = load_file(str(fsdp / "milestones" / name / "model.safetensors")), load_file(str(one / "milestones" / name / "model.safetensors"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    load_trained(fsdp)  # eval, export and package read it unchanged

    # Resume from the step-4 checkpoint's shards: the same losses and weights.
    cut = tmp_path / "cut"
    shutil.copytree(fsdp, cut)
    for ckpt in checkpoint_dirs(cut)[1:]:
        shutil.rmtree(ckpt)
    run_ranks(cut, cache_dir, *TEN_STEPS, "train.batch_size=4", "train.strategy=fsdp", "train.milestone_unit_words=100",
              "train.resume=auto")
    _assert_same_run(cut, fsdp, tol=1e-6)


def test_fsdp_needs_torchrun(tmp_path, cache_dir):
    with pytest.raises(InputError, match="train.strategy=fsdp shards the model over torchrun's processes"):
        pretrain(smoke_config(tmp_path / "run", cache_dir, "train.strategy=fsdp"))
    assert not (tmp_path / "run").exists()


def test_ddp_bert_hybrid_steps_with_the_mean_of_each_ranks_masked_loss(tmp_path, cache_dir):
    """GPT-BERT masks with each rank's own generator (seeded from (seed, rank)), so the reference is
    one process computing each rank's loss on its share with that rank's objective and stepping on
    the mean of their gradients, as DDP must."""
    from dataclasses import replace

    from tinylm.data.loader import make_loader
    from tinylm.data.pipeline import prepare_data
    from tinylm.models import build_model
    from tinylm.train.distributed import rank_seed
    from tinylm.train.objectives import build_objective
    from tinylm.train.optim import build_optimizer, lr_at

    hybrid = (*TEN_STEPS, "model=bert_tiny", "objective=hybrid", "train.batch_size=4")
    ddp = tmp_path / "ddp"
    run_ranks(ddp, cache_dir, *hybrid)

    cfg = smoke_config(tmp_path / "ref", cache_dir, *hybrid)
    tc = cfg.train
    data = prepare_data(cfg.data, cfg.tokenizer)
    model_cfg = replace(cfg.model, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(tc.seed)
    model = build_model(model_cfg)
    optimizer = build_optimizer(model, cfg.optim)
    objectives = [build_objective(cfg.objective, model, model_cfg.vocab_size, tc.steps, rank_seed(tc.seed, r),
                                  torch.device("cpu"), data.tokenizer) for r in range(2)]
    loader = make_loader(data.train, cfg.curriculum, tc.seq_len, 2 * tc.batch_size, tc.seed,
                         data.tokenizer.word_start_table(), tc.steps)
    losses = []
    for step in range(tc.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tc.steps, cfg.optim)
        batch, per_rank = loader.next_batch(), []
        for r, objective in enumerate(objectives):
            rows = slice(r * tc.batch_size, (r + 1) * tc.batch_size)
            loss, _ = objective.train_loss(model, batch.input_ids[rows], batch.targets[rows], step)
            (loss / 2).backward()
            per_rank.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(sum(per_rank) / 2)
    assert max(abs(a - b) for a, b in zip(_losses(ddp), losses)) <= 1e-6, (_losses(ddp), losses)
    weights = _final_weights(ddp)
    for name, p in model.state_dict().items():
        if name in weights:
            torch.testing.assert_close(weights[name], p, atol=1e-6, rtol=0, msg=name)
