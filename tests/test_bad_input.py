"""Each bad input: one `error:` line naming the input and the fix, exit status 2, and the
existing run directory left exactly as it was."""

import hashlib

import pytest
from helpers import run_cli

SMOKE = ("debug=cpu_smoke",)


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished smoke run: the directory the bad launches below must not touch."""
    root = tmp_path_factory.mktemp("bad-input")
    run_dir, cache = root / "run", root / "cache"
    result = run_cli("tinylm.pretrain", *SMOKE, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}")
    assert result.returncode == 0, result.stderr
    assert f"run directory: {run_dir}" in result.stdout
    return root, run_dir, cache


def bad_files(root):
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("caf\xe9\nna\xefve\n".encode("latin1"))
    (root / "tiny.txt").write_text("one two three\nfour five six\n")


CASES = {
    "missing corpus": (["data=text", "data.paths=[{root}/nope.txt]"], "data.paths: {root}/nope.txt does not exist"),
    "empty corpus": (["data=text", "data.paths=[{root}/empty.txt]"], "holds 0 document(s)"),
    "not utf-8": (["data=text", "data.paths=[{root}/latin1.txt]"], "latin1.txt is not valid UTF-8 (byte 3); re-encode it"),
    "vocab too large": (["data=text", "data.paths=[{root}/tiny.txt]", "tokenizer.vocab_size=4000"],
                        "tokenizer.vocab_size=4000 does not fit this corpus"),
    "model differs from checkpoint": (["model.d_model=32"], "model.d_model: checkpoint 128 vs requested 32"),
    "unknown device": (["train.device=tpu"], "train.device='tpu' is not a device"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line_and_keeps_the_run(case, existing_run):
    root, run_dir, cache = existing_run
    bad_files(root)
    overrides, expected = CASES[case]
    before = snapshot(run_dir)
    result = run_cli("tinylm.pretrain", *SMOKE, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}",
                     "train.resume=auto", *[o.format(root=root) for o in overrides])
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected.format(root=root) in lines[0]
    assert snapshot(run_dir) == before


def test_starting_over_an_existing_run_is_refused(existing_run):
    root, run_dir, cache = existing_run
    before = snapshot(run_dir)
    result = run_cli("tinylm.pretrain", *SMOKE, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}")
    assert result.returncode == 2
    assert "already holds a run (" in result.stderr and "; pass train.resume=auto" in result.stderr
    assert snapshot(run_dir) == before


def test_resume_with_nothing_to_resume(tmp_path):
    run_dir = tmp_path / "fresh"
    result = run_cli("tinylm.pretrain", *SMOKE, f"hydra.run.dir={run_dir}", "train.resume=auto")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: train.resume=auto: no checkpoint in {run_dir / 'checkpoints'}; drop train.resume to start a new "
        "run, or set hydra.run.dir to the run you want to continue"
    ]
    assert not run_dir.exists()
