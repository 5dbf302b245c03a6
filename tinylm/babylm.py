"""`python -m tinylm.babylm [keys] [pretraining overrides]` (`make babylm ARGS="..."`): one command from
a corpus to a BabyLM submission folder.

    make babylm ARGS="experiment=babylm_strict_small_gpt_bert data.root=DIR tasks=EVAL_DIR"
    make babylm ARGS="experiment=... data.root=DIR train.eval_tasks=../shared/eval_dev tasks=FULL_EVAL_DIR"

Four stages, each the library function its own command runs:

1. prepare the data        tinylm.prepare_data.run        (tokenizer + shards, cached by content)
2. pretrain                tinylm.train.loop.pretrain     (milestones on; with train.eval_tasks=FOLDER the
                                                           fast set is scored at every milestone)
3. evaluate                tinylm.eval.run.evaluate       (the full set `tasks=FOLDER` at the end, with the
                                                           scorer the objective calls for: clm -> causal,
                                                           mlm -> pll, hybrid -> mntp)
4. package                 tinylm.package.build.build_package  (final model + every milestone revision)

Keys of this command (everything else is a pretraining override, composed from conf/pretrain.yaml as
`python -m tinylm.pretrain` composes it):
    tasks=FOLDER      the full evaluation set (no evaluation without it: the package then has no predictions)
    out=DIR           the submission folder (default RUN_DIR/babylm_submission)
    repo_id=USER/NAME named in the model card and push_to_hub.py
    run_dir=DIR       the run directory (default runs/babylm/<experiment>_<date>-<time>); with
                      train.resume=auto an interrupted command continues where it stopped
Bad input -> one `error: ...` line and exit status 2, before anything is trained where it can be.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tinylm.errors import InputError

OWN_KEYS = ("tasks", "out", "repo_id")


def split_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """This command's own keys, and the pretraining overrides (everything else)."""
    own, rest = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in OWN_KEYS:
            own[key] = value
        elif arg.startswith("-"):
            raise InputError(f"{arg}: python -m tinylm.babylm takes key=value arguments only (no Hydra flags)")
        else:
            rest.append(arg)
    return own, rest


def compose_pretrain(overrides: list[str]):
    """The PretrainConfig `python -m tinylm.pretrain OVERRIDES` would run (run_dir made explicit)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from tinylm.cli import CONF_DIR
    from tinylm.config import register_configs

    register_configs()
    if not any(o.startswith("run_dir=") for o in overrides):
        experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "run")
        overrides = [*overrides, f"run_dir=runs/babylm/{experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("pretrain", overrides=overrides)
        return OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"the pretraining overrides do not compose: {first}") from None


def run(argv: list[str]) -> dict[str, Any]:
    from tinylm.eval.formats import read_tasks

    own, overrides = split_args(argv)
    cfg = compose_pretrain(overrides)
    if not cfg.train.milestones:
        raise InputError("train.milestones=false: a BabyLM submission needs its milestone checkpoints; drop the override")
    tasks = own.get("tasks")
    if tasks is not None:
        if not Path(tasks).expanduser().exists():
            raise InputError(f"tasks={tasks} does not exist; give the full evaluation folder (e.g. evaluation_data/full_eval)")
        if not read_tasks(tasks)[0]:  # bad files fail here, before hours of training
            raise InputError(f"tasks={tasks} holds no evaluation files (.jsonl / .txt minimal pairs)")
    run_dir = Path(cfg.run_dir)
    out = Path(own["out"]).expanduser() if own.get("out") else run_dir / "babylm_submission"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"out={out} already exists and is not empty; choose another folder or remove it")

    # the heavy imports (torch, transformers) only once the input is known to be good
    from tinylm.eval.config import EvalConfig
    from tinylm.eval.run import evaluate
    from tinylm.package.build import build_package
    from tinylm.package.config import PackageConfig
    from tinylm.prepare_data import PrepareDataConfig
    from tinylm.prepare_data import run as prepare
    from tinylm.train.loop import pretrain

    print(f"[1/4] preparing the data ({cfg.data.name}: {cfg.data.root or ', '.join(cfg.data.paths) or 'built in'})")
    prepare(PrepareDataConfig(data=cfg.data, tokenizer=cfg.tokenizer))
    print(f"[2/4] pretraining into {run_dir}")
    summary = pretrain(cfg)
    results = None
    if tasks is not None:
        print(f"[3/4] evaluating {tasks} (scorer=auto: from objective={cfg.objective.name})")
        results = evaluate(EvalConfig(ckpt=str(run_dir), tasks=tasks, out=str(run_dir / "eval"), scorer="auto",
                                      device=cfg.train.device, threads=cfg.train.threads))
    else:
        print("[3/4] no tasks=FOLDER given: no final evaluation (the package has no predictions.json)")
    print(f"[4/4] packaging into {out}")
    package = build_package(PackageConfig(run=str(run_dir), out=str(out), repo_id=own.get("repo_id")))
    done = {"run_dir": str(run_dir), "submission": str(package), "words_seen": summary["words_seen"],
            "final_dev_loss": summary["final_dev_loss"], "summary": None if results is None else results["summary"]}
    print(f"done: run {run_dir}, submission {package}")
    return done


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tinylm.cli import report_input_errors

    return report_input_errors(run)(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
