"""`python -m tinylm.package run=RUN_DIR out=DIR`: a BabyLM submission folder (see tinylm.package.build).

    python -m tinylm.package run=runs/a
    python -m tinylm.package run=runs/a out=/tmp/sub repo_id=me/tiny-babylm overwrite=true

Exit status 2 with one `error: ...` line when the run is not BabyLM-compliant (compliance.json is
still written into `out`) or an input is wrong.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.errors import InputError
from tinylm.package.config import register_package_config

register_package_config()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="package")
@report_input_errors
def main(cfg: DictConfig) -> str:
    if OmegaConf.is_missing(cfg, "run"):
        raise InputError("run not given; e.g. python -m tinylm.package run=RUN_DIR out=DIR")
    from tinylm.package.build import build_package

    return str(build_package(OmegaConf.to_object(cfg)))


if __name__ == "__main__":
    main()
