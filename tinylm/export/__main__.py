"""`python -m tinylm.export ckpt=RUN_DIR out=DIR`: write a Hugging Face folder that loads offline
with `trust_remote_code=True` (AutoConfig, AutoModel, AutoModelForCausalLM and/or AutoModelForMaskedLM,
AutoTokenizer / AutoProcessor), for every model family.

    python -m tinylm.export ckpt=runs/a out=runs/a/hf
    python -m tinylm.export ckpt=runs/a/checkpoints/step_00000600 out=/tmp/hf dtype=bfloat16 overwrite=true
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.errors import InputError
from tinylm.export.config import register_export_config

register_export_config()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
@report_input_errors
def main(cfg: DictConfig) -> str:
    missing = [k for k in ("ckpt",) if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise InputError(f"{', '.join(missing)} not given; e.g. python -m tinylm.export ckpt=RUN_DIR out=DIR")
    from tinylm.export.hf import export_hf

    c = OmegaConf.to_object(cfg)
    out = export_hf(c.ckpt, c.out, dtype=c.dtype, check=c.check, overwrite=c.overwrite)
    print(f"exported {c.ckpt} to {out}")
    return str(out)


if __name__ == "__main__":
    main()
