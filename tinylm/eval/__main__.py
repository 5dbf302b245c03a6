"""`python -m tinylm.eval ckpt=RUN_DIR tasks=FOLDER [overrides]`: zero-shot minimal-pair evaluation.

    python -m tinylm.eval ckpt=runs/a tasks=../shared/eval_samples
    python -m tinylm.eval ckpt=runs/a/checkpoints/step_00000600 tasks=blimp/ out=/tmp/ev scorer=causal
    python -m tinylm.eval ckpt=runs/a tasks=blimp/ tie_credit=0.5 max_items=100
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.errors import InputError
from tinylm.eval.config import register_eval_config

register_eval_config()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@report_input_errors
def main(cfg: DictConfig) -> dict:
    missing = [k for k in ("ckpt", "tasks") if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise InputError(f"{', '.join(missing)} not given; e.g. python -m tinylm.eval ckpt=RUN_DIR tasks=FOLDER")
    from tinylm.eval.run import evaluate

    return evaluate(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
