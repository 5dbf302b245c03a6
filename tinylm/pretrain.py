"""`python -m tinylm.pretrain [overrides]`: train a model as conf/pretrain.yaml says.

    python -m tinylm.pretrain model=gpt_10m optim.lr=1e-3
    python -m tinylm.pretrain -m optim.lr=1e-3,3e-3      # a sweep, one run directory per job
    python -m tinylm.pretrain --cfg job                  # print the composed config
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pretrain")
@report_input_errors
def main(cfg: DictConfig) -> dict:
    from tinylm.train.loop import pretrain

    return pretrain(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
