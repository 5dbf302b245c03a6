"""`pip install .` gives a working tinylm: the wheel carries the configs and the `tinylm` command,
and a run launched from an unrelated directory trains."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

from helpers import ROOT


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_wheel_installs_and_trains_from_another_directory(tmp_path, cache_dir):
    # Build from a copy of what the wheel is made of (an in-tree build leaves build/ behind), without
    # isolation: no download of setuptools (the tests run offline).
    src = tmp_path / "src"
    for name in ("tinylm", "kernels", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                  str(src)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("tinylm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for conf in ("tinylm/conf/pretrain.yaml", "tinylm/conf/model/gpt_tiny.yaml", "tinylm/conf/debug/cpu_smoke.yaml"):
        assert conf in names
    assert any(n.endswith("entry_points.txt") for n in names)

    # A fresh venv that sees this interpreter's packages (torch is not installed again) but not its
    # tinylm: those site-packages come after the venv's own, through a .pth file.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    venv_site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = [p for p in (*site.getsitepackages(), *sys.path) if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(venv_site, "deps.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys(deps)) + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(py), "-c", "import tinylm.cli as c; print(c.__file__); print(c.CONF_DIR)"], cwd=elsewhere, env=env)
    module_file, conf_dir = where.stdout.split()
    assert module_file.startswith(str(venv)) and conf_dir.startswith(str(venv)), where.stdout

    tinylm = venv / "bin" / "tinylm"
    assert "pretrain" in _run([str(tinylm), "--help"], cwd=elsewhere, env=env).stdout
    result = _run([str(tinylm), "pretrain", "debug=cpu_smoke", "train.threads=1", f"data.cache_dir={cache_dir}"],
                  cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    run_dirs = list((elsewhere / "runs").glob("*/*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / "train.log").is_file()
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["final_dev_loss"] > 0
