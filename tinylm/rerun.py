"""Re-running a run from its own directory.

A run directory holds the resolved config (config.yaml) and the command-line overrides that made it
(overrides.yaml, Hydra's `overrides.task`). Either of these re-runs it into a new directory:

    tinylm pretrain --config-dir RUN --config-name config hydra.run.dir=NEW [more overrides]
    tinylm pretrain from_run=RUN [hydra.run.dir=NEW] [more overrides]

The saved config is complete and resolved, so the re-run does not depend on conf/ having stayed
the same; it is type-checked against the schema like any other launch.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tinylm.errors import InputError
from tinylm.utils import write_atomic

DEFAULT_RUN_DIR = "runs/${now:%Y-%m-%d}/${now:%H-%M-%S}"  # as conf/pretrain.yaml's hydra.run.dir


def write_overrides(run_dir: Path, config_name: str) -> None:
    """overrides.yaml beside config.yaml (overrides.resumed_at_N.yaml beside a resume's config):
    the overrides of this launch, as Hydra records them. Nothing is written outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    overrides = list(HydraConfig.get().overrides.task)
    write_atomic(run_dir / config_name.replace("config", "overrides", 1), OmegaConf.to_yaml(overrides))


def expand_rerun_argv(argv: list[str]) -> list[str]:
    """Command-line rewriting for a re-run (sys.argv without the program name):
    - `from_run=RUN` becomes `--config-dir RUN --config-name config`, with a fresh run directory
      under runs/ unless hydra.run.dir is given;
    - when the config dir is a run directory, the Hydra settings of conf/pretrain.yaml that a saved
      config.yaml lacks are added: no .hydra/ folder (tinylm writes the config itself) and log
      lines on stdout (no pretrain.log beside train.log)."""
    given = [a for a in argv if a.startswith("from_run=")]
    if len(given) > 1:
        raise InputError("from_run= given twice; name one run directory")
    if given:
        run = Path(given[0].split("=", 1)[1]).expanduser()
        if not (run / "config.yaml").is_file():
            raise InputError(f"from_run={run}: no config.yaml there; pass a tinylm run directory (runs/DATE/TIME)")
        argv = [a for a in argv if a is not given[0]] + ["--config-dir", str(run.resolve()), "--config-name", "config"]
        if not any(a.startswith("hydra.run.dir=") for a in argv):
            argv.append(f"hydra.run.dir={DEFAULT_RUN_DIR}")
    config_dir = _flag_value(argv, "--config-dir", "-cd")
    if config_dir is not None and (Path(config_dir) / "data_report.json").is_file():
        argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return argv


def _flag_value(argv: list[str], long: str, short: str) -> str | None:
    for i, a in enumerate(argv):
        if a in (long, short) and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(long + "="):
            return a.split("=", 1)[1]
    return None


def is_saved_config(cfg: DictConfig) -> bool:
    """True when the composed config came from a run's config.yaml instead of conf/pretrain.yaml:
    it is then a plain mapping, not yet typed by the PretrainConfig schema."""
    return OmegaConf.get_type(cfg) is dict


def typed_saved_config(cfg: DictConfig, run_dir: str) -> DictConfig:
    """A saved run config merged onto the schema (types and unknown keys checked), writing into
    run_dir (the saved run_dir names the old run, never the re-run)."""
    from tinylm.config import PretrainConfig

    saved = OmegaConf.to_container(cfg, resolve=True)
    saved["run_dir"] = run_dir
    try:
        return OmegaConf.merge(OmegaConf.structured(PretrainConfig), saved)
    except Exception as e:  # omegaconf's ValidationError / ConfigKeyError name the key
        raise InputError(f"the saved config does not fit this tinylm version: {e}".splitlines()[0]) from None
