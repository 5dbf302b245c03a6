"""The `tinylm` command (tinylm/cli.py): help, dispatch to each app, shell completion, and
re-running a run from its own directory (tinylm/rerun.py)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import run_cli
from tinylm import cli
from tinylm.errors import InputError
from tinylm.rerun import DEFAULT_RUN_DIR, expand_rerun_argv

SMOKE = ("debug=cpu_smoke", "train.threads=1")


def test_help_lists_every_command(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: tinylm COMMAND")
    for name in ("pretrain", "eval", "export", "package", "data", "generate"):
        assert f"\n  {name} " in out


def test_unknown_command_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["pretrian", "model=gpt_10m"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'pretrian'") and err.count("\n") == 1


def test_command_whose_module_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "nothing", ("tinylm.no_such_module", "absent"))
    with pytest.raises(SystemExit) as e:
        cli.main(["nothing"])
    assert e.value.code == 2 and "tinylm.no_such_module" in capsys.readouterr().err


@pytest.mark.parametrize("command, config_name", [("eval", "eval"), ("export", "export"), ("package", "package"),
                                                  ("data", "prepare_data"), ("pretrain", "pretrain")])
def test_each_command_runs_its_app(command, config_name, capsys, monkeypatch):
    """`tinylm COMMAND --cfg job` prints the config that app composes (its own conf/*.yaml)."""
    monkeypatch.setattr("sys.argv", ["tinylm"])
    cli.main([command, "--cfg", "job"])
    printed = OmegaConf.create(capsys.readouterr().out)
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        expected = compose(config_name)
    assert OmegaConf.to_container(printed) == OmegaConf.to_container(expected)


def test_generate_maps_to_its_module():
    assert cli.COMMANDS["generate"][0] == "tinylm.generate"


@pytest.mark.parametrize("line, expected, absent", [
    ("tinylm pre", {"pretrain"}, {"eval"}),
    ("tinylm pretrain model=gpt", {"model=gpt_tiny", "model=gpt_10m"}, {"model=bert_tiny"}),
    ("tinylm pretrain optim=", {"optim=adamw", "optim=muon"}, set()),
])
def test_shell_completion_through_the_subcommand(line, expected, absent, capsys, monkeypatch):
    """Hydra's bash completion calls `tinylm -sc query=bash` with the typed line in COMP_LINE."""
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    monkeypatch.setattr("sys.argv", ["tinylm"])
    cli.main(["-sc", "query=bash"])
    offered = set(capsys.readouterr().out.split())
    assert expected <= offered and not (absent & offered)


def test_completion_install_names_the_command(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["/somewhere/bin/tinylm"])
    cli.main(["pretrain", "--shell-completion", "install=bash"])
    assert capsys.readouterr().out.rstrip().endswith("-F hydra_bash_completion tinylm")


def test_from_run_expands_to_the_config_dir_form(tmp_path):
    (tmp_path / "config.yaml").write_text("run_dir: x\n")
    (tmp_path / "data_report.json").write_text("{}")
    argv = expand_rerun_argv([f"from_run={tmp_path}", "train.steps=4"])
    assert argv == ["train.steps=4", "--config-dir", str(tmp_path), "--config-name", "config",
                    f"hydra.run.dir={DEFAULT_RUN_DIR}", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    assert expand_rerun_argv(["model=gpt_10m"]) == ["model=gpt_10m"]  # an ordinary launch is untouched
    with pytest.raises(InputError, match="no config.yaml"):
        expand_rerun_argv([f"from_run={tmp_path / 'nope'}"])


def test_from_a_missing_run_is_one_error_line(tmp_path):
    result = run_cli("tinylm", "pretrain", f"from_run={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: from_run=") and "\n" not in result.stderr.strip()


def test_a_run_reruns_from_its_own_directory(tmp_path, cache_dir):
    """The saved config.yaml (+ overrides.yaml) reproduce the run: same losses, step by step."""
    first, again = tmp_path / "first", tmp_path / "again"
    result = run_cli("tinylm", "pretrain", *SMOKE, f"data.cache_dir={cache_dir}", "optim.lr=2e-3", f"hydra.run.dir={first}")
    assert result.returncode == 0, result.stderr
    assert OmegaConf.load(first / "overrides.yaml") == [*SMOKE, f"data.cache_dir={cache_dir}", "optim.lr=2e-3"]
    # From another directory, as a user would: nothing but the run directory is needed.
    result = run_cli("tinylm", "pretrain", "--config-dir", str(first), "--config-name", "config",
                     f"hydra.run.dir={again}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (first, again)]
    losses = [[(r["step"], r.get("loss"), r.get("dev_loss")) for r in rs] for rs in rows]
    assert len(losses[0]) >= 4 and losses[0] == losses[1]
    saved = OmegaConf.load(again / "config.yaml")
    assert saved.run_dir == str(again) and saved.optim.lr == 2e-3
    assert not (again / ".hydra").exists() and not (again / "pretrain.log").exists()
