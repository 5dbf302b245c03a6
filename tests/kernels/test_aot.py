"""Ahead-of-time compile checks (tinylm.kernels.aot): kernels compile for sm_80 and sm_90 with no
register spills and shared memory within the limit, on this GPU-less machine.

The normal suite compiles a representative subset (the most register-hungry variant of each
kernel family that "auto" can launch). `make test-aot` sets TINYLM_AOT=all and compiles every
specialisation the models launch (several hundred compiles; run it with idle cores).
"""

import os
import subprocess
import sys

import pytest

from tinylm import ops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_aot(*args: str, timeout: int) -> subprocess.CompletedProcess:
    # A fresh process without TRITON_INTERPRET: the kernels must be real @triton.jit functions.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "tinylm.kernels.aot", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def compile_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("sm_")]


def check_ci_subset(*families: str) -> None:
    result = run_aot("--subset", "ci", "--only", *families, timeout=600)
    lines = compile_lines(result.stdout)
    for family in families:
        for arch in ("sm_80", "sm_90"):
            assert any(line.startswith(arch) and f"({family})" in line for line in lines), (family, arch, result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all("stack 0 " in line and line.endswith("-> ok") for line in lines), result.stdout


def test_layer_norm_and_fused_ce_compile_without_spills():
    check_ci_subset("layer_norm", "fused_ce")


def test_mlstm_compiles_without_spills():
    check_ci_subset("mlstm")


def test_attention_compiles_without_spills():
    """Forward, dK/dV and dQ with causal + document masks at head dim 64: GPT training with
    train.doc_mask, the class whose every dQ config spilled on sm_80 before the spill tables."""
    check_ci_subset("attention")


def test_bert_attention_compiles_without_spills():
    """The relative-attention dQ/dc2p kernel (the one with the most live registers: its bucket
    accumulator and segment-sum gathers) in its largest d64 config."""
    check_ci_subset("bert_attention")


@pytest.mark.skipif(os.environ.get("TINYLM_AOT") != "all", reason="the whole set runs under make test-aot")
def test_every_specialisation_compiles_without_spills():
    result = run_aot("--subset", "all", "--jobs", os.environ.get("TINYLM_AOT_JOBS", "2"), timeout=4 * 3600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_auto_routes_layer_norm_only_to_spill_free_widths():
    """The widths the AOT check found spill-free (aligned up to 8192, others up to 4096)."""
    assert ops.layer_norm_suits_kernel(768) and ops.layer_norm_suits_kernel(8192)
    assert ops.layer_norm_suits_kernel(4095)
    assert not ops.layer_norm_suits_kernel(8190)  # N % 16 != 0 above 4096 spills
    assert not ops.layer_norm_suits_kernel(8208)


def test_auto_routes_relative_attention_only_to_checked_bucket_blocks():
    """Every bucket count "auto" sends to the BERT kernel lands on a BLOCK_R the AOT check compiles."""
    from tinylm.kernels import bert_attention as ba

    checked = {ba._block_r(R) for _, R in ba.AOT_POSITIONS.values()}
    assert {ba._block_r(R) for R in ops.RELATIVE_AUTO_BUCKETS} == checked == {32, 64}


def test_auto_routes_attention_only_to_checked_head_dims():
    """Every head dim "auto" launches is one the AOT check compiles as launchable (not forced-only)
    for both attention kernels, so no spilling or unchecked specialisation is reachable by default."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from tinylm import ops; from tinylm.kernels import aot, bert_attention as ba; "
            "vs = aot.all_variants(['attention', 'bert_attention']); "
            "print(sorted({int(v.name.split(' D')[1].split()[0]) for v in vs if not v.forced_only and ' D' in v.name}), "
            "sorted(ops.ATTENTION_AUTO_HEAD_DIMS), sorted(ba.AOT_HEAD_DIMS))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split("] [")
    checked, auto, bert = ([int(x) for x in part.strip("[]\n ").split(",")] for part in out)
    assert set(auto) <= set(checked) and set(auto) <= set(bert), (auto, checked, bert)
