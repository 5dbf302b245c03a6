"""`python -m tinylm.pretrain [overrides]`: train a model as conf/pretrain.yaml says.

    python -m tinylm.pretrain model=gpt_10m optim.lr=1e-3
    python -m tinylm.pretrain -m optim.lr=1e-3,3e-3      # a sweep, one run directory per job
    python -m tinylm.pretrain --cfg job                  # print the composed config
    python -m tinylm.pretrain from_run=RUN               # re-run a run from its config.yaml (tinylm/rerun.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.config import register_configs
from tinylm.errors import InputError
from tinylm.logs import detach_run_log
from tinylm import rerun

register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pretrain")
@report_input_errors
def main(cfg: DictConfig) -> dict:
    from tinylm.train.guard import RunStopped
    from tinylm.train.loop import pretrain

    try:
        if rerun.is_saved_config(cfg):  # --config-dir RUN --config-name config (or from_run=RUN)
            cfg = rerun.typed_saved_config(cfg, HydraConfig.get().runtime.output_dir)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return _sweep_job(cfg, pretrain)
        return pretrain(OmegaConf.to_object(cfg))
    except RunStopped as e:  # a stop signal: checkpoint written, one line, non-zero exit
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except InputError as e:
        # Hydra creates the run directory before the job starts; a launch rejected before writing
        # anything leaves no empty folder behind (a non-empty one is never touched).
        run_dir = Path(cfg.run_dir)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # In a sweep one bad job must not stop the others: Hydra records it as failed (the
            # sweep summary says why), runs the remaining jobs, and exits non-zero at the end.
            print(f"error: {e}", file=sys.stderr)
            raise JobFailed(str(e)) from None
        raise
    finally:
        detach_run_log()  # a failed run leaves no handler on train.log behind


def _sweep_job(cfg: DictConfig, pretrain) -> dict | float:
    """One job of a multirun: resumable with train.resume=auto (tinylm.train.sweep.resume_job); under
    hydra/sweeper=optuna it returns the objective, the final dev loss."""
    from tinylm.train.sweep import resume_job

    run = OmegaConf.to_object(cfg)
    run.train.resume, summary = resume_job(Path(run.run_dir), run.train.resume, run.train.steps)
    if summary is None:
        summary = pretrain(run)
    else:
        print(f"sweep job {HydraConfig.get().job.num} finished earlier: {run.run_dir} (skipped)")
    if "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower():
        return float(summary["final_dev_loss"])
    return summary


class JobFailed(RuntimeError):
    """A sweep job rejected for bad input (not caught by report_input_errors, so Hydra goes on)."""


if __name__ == "__main__":
    try:
        sys.argv = [sys.argv[0], *rerun.expand_rerun_argv(sys.argv[1:])]
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
