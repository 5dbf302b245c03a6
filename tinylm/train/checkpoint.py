"""Checkpoints: safetensors for tensors, JSON for everything else; no pickle anywhere.

A checkpoint is a folder `checkpoints/step_00000200/`:
    model.safetensors    model weights (tied weights stored once)
    state.safetensors    optimizer moments and the RNG states
    state.json           step, tokens/words seen, loader position, optimizer hyper-parameters,
                         the model config, and the data the run was trained on
    objective.safetensors  only when the objective owns weights besides the model's (MTP heads,
                         the bootstrap EMA teacher and predictor): trained and resumed, never exported
    manifest.json        sha256 and size of each file above, written last
It is built under a temporary name and renamed into place (tinylm.utils.atomic_dir), so a process
killed while writing leaves the previous checkpoint as the newest loadable one. The manifest catches
what the rename cannot: a file truncated, emptied, removed or bit-flipped afterwards
(`verify_checkpoint`); resume falls back to the newest intact checkpoint, and rotation never deletes
the newest intact one. Weights with a NaN or inf are never written (`save_checkpoint` refuses).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from tinylm.errors import InputError
from tinylm.utils import atomic_dir, sha256_file

_STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
CHECKPOINT_FILES = ("model.safetensors", "state.safetensors", "state.json")
OBJECTIVE_FILE = "objective.safetensors"

log = logging.getLogger(__name__)


class NonFiniteWeights(RuntimeError):
    """The model holds NaN/inf weights: such a checkpoint is never written."""


def step_dirs(run_dir: str | Path) -> list[Path]:
    """Every checkpoints/step_* folder, damaged or not, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_of(ckpt: Path) -> int:
    return int(_STEP_DIR.match(ckpt.name).group(1))



def verify_checkpoint(ckpt: str | Path, training_state: bool = True) -> str | None:
    """None when the checkpoint is intact, else what is wrong with it (one phrase). Folders without
    a manifest (checkpoints from before manifests, milestones) are checked for their files and a
    readable state.json; training_state=False does not ask for state.safetensors (weights only)."""
    ckpt = Path(ckpt)
    manifest_path = ckpt / MANIFEST
    if not manifest_path.exists():
        needed = CHECKPOINT_FILES if training_state else ("model.safetensors", "state.json")
        missing = [n for n in needed if not (ckpt / n).is_file() or (ckpt / n).stat().st_size == 0]
        if missing:
            return f"{', '.join(missing)} missing or empty (and no {MANIFEST})"
        try:
            json.loads((ckpt / "state.json").read_text())
        except (ValueError, UnicodeDecodeError):
            return "state.json is not valid JSON (and no manifest.json)"
        return None
    try:
        manifest = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{MANIFEST} is unreadable"
    for name, want in sorted(manifest.items()):
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {want['bytes']} (truncated?)"
        if sha256_file(path) != want["sha256"]:
            return f"{name} does not match its sha256 in {MANIFEST} (corrupted)"
    return None


def newest_intact(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies; each damaged newer one is reported in one line."""
    for ckpt in reversed(step_dirs(run_dir)):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            return ckpt
        log.warning(f"warning: checkpoint {ckpt} is damaged ({problem}); falling back to an older one")
    return None


def non_finite_weights(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or inf."""
    with torch.no_grad():
        return [name for name, t in [*model.named_parameters(), *model.named_buffers()]
                if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of torn writes are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.json").exists()]
    return [p for _, p in sorted(found)]


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep: int,
    extra: torch.nn.Module | None = None,
) -> Path:
    """Write the checkpoint after `step` optimizer steps; keep only the newest `keep` of them (and
    always the newest intact one). Refuses (NonFiniteWeights) weights holding NaN or inf.
    optimizer=None: its state is kept elsewhere (FSDP's sharded step_N.dcp, tinylm/train/distributed.py)."""
    bad = non_finite_weights(model) + (non_finite_weights(extra) if extra is not None else [])
    if bad:
        raise NonFiniteWeights(f"{len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]}); checkpoint of step {step} not written")
    final = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    opt = optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    tensors = {
        f"optim.{idx}.{name}": value.detach().cpu().contiguous()
        for idx, per_param in opt["state"].items()
        for name, value in per_param.items()
    }
    tensors.update(_rng_tensors())
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
    with atomic_dir(final) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state, "optimizer_groups": groups}, indent=2) + "\n")
        names = CHECKPOINT_FILES
        if extra is not None:
            save_model(extra, str(tmp / OBJECTIVE_FILE))
            names += (OBJECTIVE_FILE,)
        files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)} for n in names}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=2, sort_keys=True) + "\n")
    rotate(run_dir, keep)
    return final


def rotate(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, never the newest intact one (which a damaged
    newer checkpoint would otherwise push out)."""
    if keep <= 0:
        return
    found = step_dirs(run_dir)
    good = newest_intact(run_dir)
    for old in found[:-keep]:
        if old != good:
            shutil.rmtree(old, ignore_errors=True)


def read_state(ckpt: str | Path) -> dict[str, Any]:
    state = json.loads((Path(ckpt) / "state.json").read_text())
    model_config = state.get("model_config", {})
    # BERT checkpoints written before model.bert_arch existed hold the earlier sketch, whose weight
    # names differ from the LTG-BERT default: they load as bert_arch=simple.
    if model_config.get("family") == "bert" and "bert_arch" not in model_config:
        model_config["bert_arch"] = "simple"
    return state


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    extra: torch.nn.Module | None = None) -> dict[str, Any]:
    """Restore weights (and optimizer + RNG when `optimizer` is given, the objective's own weights
    when `extra` is); returns state.json."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=True)
    # The objective's own weights (MTP heads, the bootstrap teacher): a resume needs the same options.
    fix = "resume with the objective options it was trained with (objective.mtp_heads, objective=bootstrap)"
    if extra is not None:
        if not (ckpt / OBJECTIVE_FILE).is_file():
            raise InputError(f"checkpoint {ckpt} has no {OBJECTIVE_FILE} (its objective kept no weights of its own); {fix}")
        try:
            load_model(extra, str(ckpt / OBJECTIVE_FILE), strict=True)
        except RuntimeError:
            raise InputError(f"checkpoint {ckpt}: its {OBJECTIVE_FILE} does not fit this run's objective; {fix}") from None
    elif optimizer is not None and (ckpt / OBJECTIVE_FILE).is_file():
        raise InputError(f"checkpoint {ckpt} holds {OBJECTIVE_FILE} (weights of its objective) that this run has no use for; {fix}")
    if optimizer is not None:
        tensors = load_file(str(ckpt / "state.safetensors"))
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                per_param.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer_groups"]})
        _restore_rng(tensors)
    return state


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, state) from a run directory (its newest checkpoint) or
    a checkpoint folder: what evaluation, export and packaging start from."""
    from tinylm.config import ModelConfig, to_dataclass
    from tinylm.data.tokenizer import load_tokenizer
    from tinylm.models import build_model

    path = Path(path)
    if (path / "state.json").exists():
        ckpt, run_dir = path, path.parent.parent
        problem = verify_checkpoint(ckpt, training_state=False)
        if problem is not None:
            raise InputError(f"checkpoint {ckpt} is damaged ({problem}); pass its run directory to use the newest intact one")
    else:
        ckpt, run_dir = newest_intact(path), path
        if ckpt is None:
            raise InputError(f"{path}: no intact checkpoint found; pass a run directory with checkpoints/ or a checkpoints/step_* folder")
    if not (run_dir / "tokenizer.model").exists():
        raise InputError(f"{run_dir}: no tokenizer.model beside the checkpoints; is this a tinylm run directory?")
    state = read_state(ckpt)
    model = build_model(to_dataclass(ModelConfig, state["model_config"]))
    load_checkpoint(ckpt, model, optimizer=None)
    return model.to(device).eval(), load_tokenizer(run_dir / "tokenizer.model"), state


