"""`python -m tinylm.generate ckpt=RUN prompt="..." [n=5 temperature=0.8 top_k=50 max_new_tokens=64 seed=0]`:
sample continuations of a prompt from a trained run.

    python -m tinylm.generate ckpt=runs/a prompt="Once upon a time" n=5
    python -m tinylm.generate ckpt=runs/a/milestones/chck_10M prompt="The dog" temperature=0 max_new_tokens=20

`ckpt` is a run directory (its newest checkpoint), a checkpoints/step_* folder or a milestones/chck_*M
folder. A GPT samples with its key/value cache, an mLSTM with its recurrent state, a BERT trained
as GPT-BERT (objective=hybrid) or causally (clm, distill) runs causally; a BERT trained only as a
masked LM (objective=mlm) cannot continue text and is refused with a pointer to tinylm.eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.errors import InputError


@dataclass
class GenerateConfig:
    ckpt: str = MISSING  # run dir, checkpoints/step_* or milestones/chck_*M folder
    prompt: str = ""  # "" starts from <s> alone
    n: int = 1  # samples
    temperature: float = 0.8  # 0: greedy
    top_k: int = 50  # 0: no top-k cut
    max_new_tokens: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch CPU threads; 0 keeps torch's default


def register_generate_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)


register_generate_config()


def check_can_generate(model, run_dir: Path, ckpt: Path) -> None:
    """Refuse a masked-only BERT: it never learned to predict the next token."""
    family = model.cfg.family
    if getattr(model, "causal", False):
        return
    from tinylm.train.positions import CAUSAL, reads, run_objective

    objective = run_objective(run_dir, family)
    if CAUSAL not in reads(objective):
        raise InputError(f"ckpt={ckpt}: a {family} trained with objective={objective} (masked only) cannot continue a prompt; "
                         "train it with objective=hybrid (GPT-BERT) or clm to generate, or score it with python -m tinylm.eval")


@torch.no_grad()
def generate(cfg: GenerateConfig) -> list[str]:
    """The n sampled texts (prompt + continuation, decoded), also printed."""
    from tinylm.data.tokenizer import BOS_ID, EOS_ID
    from tinylm.train.checkpoint import load_trained
    from tinylm.train.devices import resolve_device
    from tinylm.train.positions import run_dir_of

    for key, value, low in (("n", cfg.n, 1), ("max_new_tokens", cfg.max_new_tokens, 1), ("top_k", cfg.top_k, 0)):
        if value < low:
            raise InputError(f"{key}={value} must be at least {low}")
    if cfg.temperature < 0:
        raise InputError(f"temperature={cfg.temperature} must be >= 0 (0 = greedy)")
    device = resolve_device(cfg.device, "device")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ckpt = Path(cfg.ckpt).expanduser()
    model, tokenizer, state = load_trained(ckpt, device)
    check_can_generate(model, run_dir_of(ckpt), ckpt)
    prompt_ids = [BOS_ID, *(tokenizer.encode([cfg.prompt])[0] if cfg.prompt else [])]
    ids = torch.tensor([prompt_ids] * cfg.n, device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    out = model.generate(ids, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None, eos_id=EOS_ID,
                         generator=generator)
    texts = []
    for row in out.tolist():
        new = row[len(prompt_ids):]
        new = new[: new.index(EOS_ID)] if EOS_ID in new else new
        texts.append(tokenizer.decode(prompt_ids[1:] + new))  # decoded together: the spacing at the seam is right
    print(f"{ckpt} (step {state.get('step')}, {model.cfg.family}); temperature={cfg.temperature} top_k={cfg.top_k} seed={cfg.seed}")
    for i, text in enumerate(texts, 1):
        print(f"[{i}] {text}")
    return texts


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
@report_input_errors
def main(cfg: DictConfig) -> list[str]:
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise InputError('ckpt not given; e.g. python -m tinylm.generate ckpt=RUN_DIR prompt="Once upon a time"')
    return generate(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
