"""Every shipped config composes against the schema, and mistakes fail at launch."""

from pathlib import Path

import pytest
from helpers import compose_pretrain, run_cli
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from tinylm.cli import CONF_DIR
from tinylm.config import PretrainConfig

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {"model", "data", "tokenizer", "optim", "train", "logger", "experiment", "debug"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_shipped_option_composes(group, option):
    cfg = compose_pretrain(f"{group}={option}", "run_dir=/tmp/x")
    assert isinstance(cfg, PretrainConfig)
    if group == "model":
        assert cfg.model.d_model % cfg.model.n_head == 0
        assert cfg.train.seq_len <= cfg.model.max_seq_len or option == "gpt_tiny"


def test_debug_overrides_win_over_groups_and_keep_the_model():
    cfg = compose_pretrain("debug=cpu_smoke", "run_dir=/tmp/x")
    assert cfg.train.steps == 8 and cfg.train.batch_size == 4 and cfg.train.device == "cpu"
    for option in ("gpt_10m", "bert_30m", "mlstm_tiny"):  # the model you picked is the model you get
        smoke = compose_pretrain(f"model={option}", "debug=cpu_smoke", "run_dir=/tmp/x")
        assert smoke.model == compose_pretrain(f"model={option}", "run_dir=/tmp/x").model
        assert smoke.objective.name == ("mlm" if option.startswith("bert") else "clm")


def test_experiment_sets_groups():
    cfg = compose_pretrain("experiment=gpt_30m_gpu", "run_dir=/tmp/x")
    assert cfg.model.d_model == 512 and cfg.optim.schedule == "wsd"


def test_typo_and_wrong_type_fail_at_compose():
    with pytest.raises(ConfigCompositionException, match="n_layr"):
        compose_pretrain("model.n_layr=4", "run_dir=/tmp/x")
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError), match="n_layer"):
        compose_pretrain("model.n_layer=abc", "run_dir=/tmp/x")


def test_cli_rejects_typo_before_running(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("tinylm.pretrain", "model.n_layr=4", f"hydra.run.dir={run_dir}")
    assert result.returncode != 0
    assert "Key 'n_layr' not in 'ModelConfig'" in result.stderr
    assert not run_dir.exists()


def test_family_shorthands_pick_sizes_and_objectives():
    assert compose_pretrain("model=gpt", "run_dir=/tmp/x").model == compose_pretrain("model=gpt_tiny", "run_dir=/tmp/x").model
    bert = compose_pretrain("model=bert", "run_dir=/tmp/x")
    assert bert.model.family == "bert" and bert.objective.name == "mlm"  # an encoder trains masked by default
    assert compose_pretrain("model=bert", "objective=hybrid", "run_dir=/tmp/x").objective.name == "hybrid"
    assert compose_pretrain("objective=hybrid", "model=bert_10m", "run_dir=/tmp/x").objective.name == "hybrid"  # order-free
    mlstm = compose_pretrain("model=mlstm", "run_dir=/tmp/x")
    assert mlstm.model.family == "mlstm" and mlstm.objective.name == "clm"


MODEL_OPTIONS = sorted(f.stem for f in (Path(CONF_DIR) / "model").glob("*.yaml"))


@pytest.mark.parametrize("option", MODEL_OPTIONS)
def test_every_model_option_sets_its_family_objective(option):
    cfg = compose_pretrain(f"model={option}", "run_dir=/tmp/x")
    expected = {"bert": "mlm", "gpt": "clm", "mlstm": "clm"}[cfg.model.family]
    assert cfg.objective == compose_pretrain(f"objective={expected}", "run_dir=/tmp/x").objective  # the whole group
    other = "hybrid" if expected == "mlm" else "mlm"
    assert compose_pretrain(f"model={option}", f"objective={other}", "run_dir=/tmp/x").objective.name == other
