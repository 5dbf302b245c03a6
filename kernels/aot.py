"""Compile every Triton kernel specialisation the models launch for sm_80 and sm_90, on a machine
without a GPU, and check each for register spills and shared memory.

Triton compiles ahead of time for any target (ttir -> ttgir -> llir -> ptx -> cubin; ptxas ships
inside the triton wheel). For each variant we read the cubin's resource usage with the wheel's
cuobjdump: a non-zero STACK means ptxas spilled registers to local memory (none of these kernels
has a call stack otherwise), and `metadata.shared` is the shared memory one launch needs, checked
against the architecture's per-block limit. This catches compile errors, dtype mismatches in
tl.dot, constexpr misuse, spills and shared-memory overflow that the CPU interpreter never sees;
it says nothing about speed or numerics.

A variant mirrors one launch: the pointer dtypes the launcher passes (dummy pointers included),
the constexprs, num_warps / num_stages, and the divisibility-by-16 the launcher specialises on for
pointers and for the sequence strides of contiguous (..., T, D) tensors with D % 16 == 0.

    python -m tinylm.kernels.aot [--subset ci|all] [--arch 80 90] [--jobs N] [--only attention ...]

`all` is every specialisation (what `make test-aot` runs; long: several hundred compiles);
`ci` is the representative subset tests/kernels/test_aot.py runs in the normal suite. Variants
marked `forced_only` are reachable only with kernels=triton (auto keeps those shapes on PyTorch,
see tinylm.ops); their spills are reported but do not fail the check (shared memory still does).
"""

from __future__ import annotations

import os

# The kernels must be real @triton.jit functions, not the interpreter's stand-ins: drop the flag
# before any kernel module is imported (the tests set it for CPU runs).
os.environ.pop("TRITON_INTERPRET", None)

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import triton  # noqa: E402

ARCHS = (80, 90)
# Largest dynamic shared memory one block may use (CUDA programming guide, compute capabilities).
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
DTYPES = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


@dataclass(frozen=True)
class Variant:
    """One launch specialisation of one kernel."""

    module: str  # kernel module under tinylm.kernels
    kernel: str  # attribute name of the @triton.jit function in that module
    name: str  # readable id: kernel and the choices that make this variant
    types: tuple  # (arg name, signature type) for every non-constexpr argument
    constexprs: tuple  # (arg name, value)
    num_warps: int
    num_stages: int
    forced_only: bool = False  # reachable only with kernels=triton (auto routes it to PyTorch)
    aligned: tuple = field(default=())  # integer args specialised as divisible by 16


@dataclass
class Result:
    variant: Variant
    arch: int
    regs: int = 0
    stack: int = 0
    shared: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        if self.error:
            return False
        # a launch over the shared-memory limit fails on any path; spills only slow it down
        fits = self.shared <= SHARED_LIMIT[self.arch]
        return fits and (self.stack == 0 or self.variant.forced_only)

    def line(self) -> str:
        v = self.variant
        status = "ok" if self.ok else "FAIL"
        if self.ok and v.forced_only and self.stack:
            status = "spills (kernels=triton only)"
        if self.error:
            return f"sm_{self.arch} {v.name} ({v.module}): FAIL {self.error}"
        return (f"sm_{self.arch} {v.name} ({v.module}): regs {self.regs} stack {self.stack} shared {self.shared}"
                f" (limit {SHARED_LIMIT[self.arch]}) warps {v.num_warps} stages {v.num_stages}"
                f" -> {status}")


def _variant(module, kernel, name, types, constexprs, num_warps, num_stages, forced_only=False,
             aligned=()):
    return Variant(module, kernel, name, tuple(types), tuple(constexprs.items()), num_warps,
                   num_stages, forced_only, tuple(aligned))


# --------------------------------------------------------------------------------------------------
# the variants of each kernel module


def layer_norm_variants() -> list[Variant]:
    """Every BLOCK_N (next_power_of_2 of the hidden size) up to the kernel's limit, for bf16 and
    fp16 activations with fp32 parameters (autocast) and fp32 throughout; with every optional
    input (residual, weight, bias) and with none (mLSTM's per-head norm); the widest blocks also
    with a hidden size that is not a multiple of 16. Rows that ops.layer_norm_suits_kernel keeps
    on PyTorch under auto are forced_only."""
    from tinylm import ops
    from tinylm.kernels import layer_norm as ln

    out = []
    block_ns = [1 << p for p in range(5, 15)]  # 32 .. 16384 (the kernel's _MAX_N)
    for act in ("bf16", "fp16", "fp32"):
        a = DTYPES[act]
        for BN in block_ns:
            for full in (True, False):
                p = "*fp32" if full else a  # absent weight/bias/residual: dummy = x
                # a hidden size that is not a multiple of 16 loses the divisibility specialisation
                for aligned in (True, False) if full and BN >= 1024 else (True,):
                    forced = not ops.layer_norm_suits_kernel(BN if aligned else BN - 1)
                    BM, _, w = ln._fwd_launch(BN)
                    flags = dict(HAS_RES=full, HAS_W=full, HAS_B=full)
                    out.append(_variant(
                        "layer_norm", "_ln_fwd_kernel",
                        f"ln_fwd {act} N{BN} {'res+w+b' if full else 'plain'}{'' if aligned else ' N%16!=0'}",
                        [("X", a), ("R", a), ("W", p), ("B", p), ("Y", a), ("H", a), ("Mean", "*fp32"),
                         ("Rstd", "*fp32"), ("M", "i32"), ("N", "i32"), ("eps", "fp32")],
                        {**flags, "BLOCK_M": BM, "BLOCK_N": BN}, w, 3, forced, aligned=["N"] if aligned else []))
                    BM, _, w = ln._bwd_launch(BN)
                    flags = dict(HAS_DSUM=full, HAS_W=full, NEED_DW=full, NEED_DB=full)
                    out.append(_variant(
                        "layer_norm", "_ln_bwd_kernel",
                        f"ln_bwd {act} N{BN} {'res+w+b' if full else 'plain'}{'' if aligned else ' N%16!=0'}",
                        [("H", a), ("DY", a), ("DSUM", a), ("W", p), ("Mean", "*fp32"), ("Rstd", "*fp32"),
                         ("DH", a), ("DW_part", "*fp32"), ("DB_part", "*fp32"), ("M", "i32"), ("N", "i32")],
                        {**flags, "BLOCK_M": BM, "BLOCK_N": BN}, w, 3, forced, aligned=["N"] if aligned else []))
        pdt = "*fp32"
        out.append(_variant(
            "layer_norm", "_ln_bwd_reduce_kernel", f"ln_bwd_reduce {act}",
            [("DW_part", "*fp32"), ("DB_part", "*fp32"), ("DW", pdt), ("DB", pdt), ("G", "i32"),
             ("N", "i32")],
            dict(NEED_DW=True, NEED_DB=True, BLOCK_G=32, BLOCK_N=128), 4, 3))
    return out


# Mask combinations the models launch: GPT and mLSTM's window attention (causal, packed documents),
# BERT training (none, documents), BERT scoring (padding), GPT-BERT's two halves (causal or not,
# with documents), a GPT-BERT scored causally with padding.
ATTENTION_MASKS = {
    "none": dict(IS_CAUSAL=False, HAS_KPM=False, HAS_DOC=False),
    "doc": dict(IS_CAUSAL=False, HAS_KPM=False, HAS_DOC=True),
    "causal": dict(IS_CAUSAL=True, HAS_KPM=False, HAS_DOC=False),
    "causal+doc": dict(IS_CAUSAL=True, HAS_KPM=False, HAS_DOC=True),
    "causal+pad": dict(IS_CAUSAL=True, HAS_KPM=True, HAS_DOC=False),
    "pad": dict(IS_CAUSAL=False, HAS_KPM=True, HAS_DOC=False),
    "pad+doc": dict(IS_CAUSAL=False, HAS_KPM=True, HAS_DOC=True),
}
# Head dims of the shipped configs: 32 (tiny), 64 (gpt_*, bert_*), 96 and 128 (mLSTM's attention
# blocks at d_model 384 / 512 with 4 heads); 96 also covers the masked-column path (BLOCK_D > D).
ATTENTION_HEAD_DIMS = (32, 64, 96, 128)


def _attention_configs(autotuner, dtype: str, head_dim: int, masks: dict) -> list:
    """The autotune configs the kernel's own pruning keeps for this (dtype, head dim, mask) class."""
    precision = "tf32x3" if dtype == "fp32" else "tf32"
    kept = autotuner.early_config_prune(autotuner.configs, {"PRECISION": precision, "HEAD_DIM": head_dim, **masks})
    if not kept:  # the launch would fail: a spill table pruned every config of this class
        raise LookupError(f"{autotuner.fn.__name__}: no autotune config left for {dtype} head dim {head_dim} {masks}")
    return kept


def attention_variants() -> list[Variant]:
    """fp32 inputs and head dims outside ops.ATTENTION_AUTO_HEAD_DIMS are forced_only: auto keeps
    them on SDPA."""
    from tinylm import ops
    from tinylm.kernels import attention as at

    out = []
    for act in ("bf16", "fp16", "fp32"):
        a = DTYPES[act]
        for D in ATTENTION_HEAD_DIMS:
            forced = act == "fp32" or D not in ops.ATTENTION_AUTO_HEAD_DIMS
            BLOCK_D = max(16, triton.next_power_of_2(D))
            for mask_name, m in ATTENTION_MASKS.items():
                kpm = "*i8" if m["HAS_KPM"] else "*fp32"
                doc = "*i32" if m["HAS_DOC"] else "*fp32"
                span = "*i32" if (m["HAS_KPM"] or m["HAS_DOC"]) else "*fp32"
                common = dict(HEAD_DIM=D, BLOCK_D=BLOCK_D, **m,
                              PRECISION="tf32x3" if act == "fp32" else "tf32")
                strides = [f"stride_{t}{s}" for t in ("q", "k", "v", "o") for s in "bht"]
                kernels = {
                    "_fwd_kernel": [("Q", a), ("K", a), ("V", a), ("O", a), ("LSE", "*fp32"), ("KPM", kpm),
                                    ("DOC", doc), ("KSPAN_LO", span), ("KSPAN_HI", span),
                                    *[(s, "i32") for s in strides],
                                    ("H", "i32"), ("T", "i32"), ("T_BUCKET", "i32"), ("qk_scale", "fp32")],
                }
                gstrides = [f"stride_{t}{s}" for t in ("q", "k", "v", "do", "g") for s in "bht"]
                kernels["_dkdv_kernel"] = [
                    ("Q", a), ("K", a), ("V", a), ("DO", a), ("DK", a), ("DV", a), ("LSE", "*fp32"),
                    ("Delta", "*fp32"), ("KPM", kpm), ("DOC", doc), ("QSPAN_LO", span), ("QSPAN_HI", span),
                    *[(s, "i32") for s in gstrides],
                    ("H", "i32"), ("T", "i32"), ("T_BUCKET", "i32"), ("sm_scale", "fp32"), ("qk_scale", "fp32")]
                kernels["_dq_kernel"] = [
                    ("Q", a), ("K", a), ("V", a), ("DO", a), ("DQ", a), ("LSE", "*fp32"),
                    ("Delta", "*fp32"), ("KPM", kpm), ("DOC", doc), ("KSPAN_LO", span), ("KSPAN_HI", span),
                    *[(s, "i32") for s in gstrides],
                    ("H", "i32"), ("T", "i32"), ("T_BUCKET", "i32"), ("sm_scale", "fp32"), ("qk_scale", "fp32")]
                # sequence strides are D (contiguous (B, H, T, D)); divisible by 16 when D is
                aligned = [s for s in strides + gstrides if s.endswith("t") and D % 16 == 0]
                for attr, types in kernels.items():
                    tuner = getattr(at, attr)
                    fn_name = tuner.fn.__name__
                    for c in _attention_configs(tuner, act, D, m):
                        BM, BN = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
                        out.append(_variant(
                            "attention", fn_name,
                            f"{fn_name} {act} D{D} {mask_name} M{BM} N{BN} w{c.num_warps} s{c.num_stages}",
                            types, {**common, "BLOCK_M": BM, "BLOCK_N": BN}, c.num_warps, c.num_stages,
                            forced, aligned=aligned))
            out.append(_variant(
                "attention", "_bwd_delta_kernel", f"_bwd_delta_kernel {act} D{D}",
                [("O", a), ("DO", a), ("Delta", "*fp32"),
                 *[(f"stride_{t}{s}", "i32") for t in ("o", "do") for s in "bht"], ("H", "i32"), ("T", "i32")],
                dict(HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_M=at.delta_block_m(BLOCK_D)), at.DELTA_WARPS, 3, forced))
    return out


def fused_ce_variants() -> list[Variant]:
    from tinylm.kernels import fused_ce

    return fused_ce.aot_variants(_variant, DTYPES)


def bert_attention_variants() -> list[Variant]:
    from tinylm.kernels import bert_attention

    return bert_attention.aot_variants(_variant, DTYPES)


def mlstm_variants() -> list[Variant]:
    from tinylm.kernels import mlstm

    return mlstm.aot_variants(_variant, DTYPES)


FAMILIES = {
    "layer_norm": layer_norm_variants,
    "attention": attention_variants,
    "bert_attention": bert_attention_variants,
    "fused_ce": fused_ce_variants,
    "mlstm": mlstm_variants,
}


def _family_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"tinylm.kernels.{name}") is not None


def all_variants(only=None) -> list[Variant]:
    out = []
    for name, make in FAMILIES.items():
        if (only and name not in only) or not _family_available(name):
            continue
        out.extend(make())
    return out


def ci_variants(only=None) -> list[Variant]:
    """A representative subset for the normal test suite (a few compiles): per kernel family the
    variant with the most live registers that auto can launch."""
    from tinylm import ops

    wanted = [  # (family, variant name prefix)
        ("layer_norm", f"ln_bwd bf16 N{ops.LAYER_NORM_AUTO_MAX_N} res+w+b"),
        ("attention", "_attn_fwd_kernel bf16 D64 causal+doc M128 N64 w8 s3"),
        ("attention", "_attn_bwd_dkdv_kernel bf16 D64 causal+doc M64 N64 w8 s3"),
        ("attention", "_attn_bwd_dq_kernel bf16 D64 causal+doc M32 N128 w8 s3"),
        ("fused_ce", "fused_ce_lse_grad_kernel bf16"),
        ("mlstm", "mlstm_bwd_chunk bf16 D256 L64 doc"),
        ("bert_attention", "_rel_bwd_dq_kernel bf16 D64 ltg pad+doc M32 N64 w8 s2"),
    ]
    everything = all_variants(only)
    picked = []
    for family, prefix in wanted:
        if (only and family not in only) or not _family_available(family):
            continue
        match = next((v for v in everything if v.name.startswith(prefix)), None)
        if match is None:  # a renamed kernel or a dropped config must not shrink the check silently
            raise LookupError(f"the CI subset names '{prefix}', which no variant matches: update ci_variants")
        picked.append(match)
    return picked


# --------------------------------------------------------------------------------------------------
# compiling


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_variant(variant: Variant, arch: int) -> Result:
    import importlib

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    res = Result(variant, arch)
    mod = importlib.import_module(f"tinylm.kernels.{variant.module}")
    fn = getattr(mod, variant.kernel)
    if isinstance(fn, triton.runtime.Autotuner):  # it wraps the JITFunction
        fn = fn.fn
    types = dict(variant.types)
    constexprs = dict(variant.constexprs)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in types:
            signature[name] = types[name]
        else:
            res.error = f"argument {name} has no type in the variant (kernel signature changed?)"
            return res
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        if signature[name].startswith("*") or name in variant.aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    try:
        k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                           target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": variant.num_warps, "num_stages": variant.num_stages})
    except Exception as e:  # a compile error is a finding, reported per variant
        res.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
        return res
    res.shared = int(k.metadata.shared)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    res.regs = int(regs.group(1)) if regs else -1
    res.stack = (int(stack.group(1)) if stack else 0) + (int(local.group(1)) if local else 0)
    return res


def _compile_star(args):
    return compile_variant(*args)


def run(variants: list[Variant], archs=ARCHS, jobs: int = 1, echo=print) -> list[Result]:
    tasks = [(v, a) for v in variants for a in archs]
    results = []
    if jobs <= 1:
        it = map(_compile_star, tasks)
    else:
        pool = ProcessPoolExecutor(jobs)
        it = pool.map(_compile_star, tasks)
    for r in it:
        results.append(r)
        echo(r.line())
    if jobs > 1:
        pool.shutdown()
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", choices=("ci", "all"), default="all")
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=sorted(SHARED_LIMIT))
    p.add_argument("--only", nargs="+", choices=sorted(FAMILIES), default=None)
    p.add_argument("--jobs", type=int, default=1, help="compiles in parallel (processes)")
    p.add_argument("--match", default="", help="only variants whose name contains this text")
    args = p.parse_args(argv)
    variants = ci_variants(args.only) if args.subset == "ci" else all_variants(args.only)
    variants = [v for v in variants if args.match in v.name]
    print(f"{len(variants)} variants x {len(args.arch)} archs", flush=True)
    results = run(variants, args.arch, args.jobs, echo=lambda s: print(s, flush=True))
    bad = [r for r in results if not r.ok]
    forced_spills = [r for r in results if r.ok and r.stack and r.variant.forced_only]
    print(f"{len(results)} compiles: {len(results) - len(bad)} ok, {len(bad)} failed; "
          f"{len(forced_spills)} spill only in kernels=triton-only shapes")
    for r in bad:
        print("FAILED:", r.line())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
