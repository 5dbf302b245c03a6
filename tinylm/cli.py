"""The `tinylm` command, and shared plumbing for the `python -m tinylm.<app>` entry points.

`tinylm SUBCOMMAND [hydra args]` runs the module of that subcommand exactly as `python -m MODULE`
would (same Hydra app, same config, same overrides); `tinylm --help` lists the subcommands and
`tinylm SUBCOMMAND --help` shows that app's Hydra help.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import runpy
import sys
from pathlib import Path

from tinylm.errors import InputError

# An installed tinylm carries its configs as package data (tinylm/conf, pyproject.toml); a source
# checkout keeps them at the repository root, beside the package.
_PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = str(_PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf" / "pretrain.yaml").is_file() else _PACKAGE_DIR.parent / "conf")

# subcommand -> (module run as __main__, one-line description for --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("tinylm.pretrain", "train a model (conf/pretrain.yaml); `-m` for a sweep, from_run=RUN to re-run a run"),
    "eval": ("tinylm.eval", "zero-shot minimal pairs + dev perplexity of a run (conf/eval.yaml)"),
    "export": ("tinylm.export", "a Hugging Face folder from a run (conf/export.yaml)"),
    "package": ("tinylm.package", "a BabyLM submission: model, milestones, card, compliance (conf/package.yaml)"),
    "data": ("tinylm.prepare_data", "clean, budget, tokenize and shard a corpus (conf/prepare_data.yaml)"),
    "generate": ("tinylm.generate", "sample text from a run's checkpoint or milestone"),
}

USAGE = """usage: tinylm COMMAND [OVERRIDES...] [HYDRA FLAGS...]

Pretrain tiny language models. Every command is a Hydra app: key=value overrides, --cfg job,
--help, -m for sweeps (see `tinylm COMMAND --help`). Same as `python -m MODULE` and `make COMMAND`.

commands:
{commands}

examples:
  tinylm pretrain debug=cpu_smoke                   # a seconds-long run on the CPU
  tinylm pretrain model=gpt_10m optim.lr=1e-3
  tinylm pretrain --cfg job                         # print the composed config
  tinylm pretrain from_run=runs/DATE/TIME           # re-run a run from its saved config
  tinylm eval ckpt=runs/DATE/TIME
  eval "$(tinylm pretrain --shell-completion install=bash)"   # tab completion (bash; zsh, fish too)
"""


def report_input_errors(fn):
    """Turn InputError into one `error: ...` line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()))


def _completion_query(argv: list[str]) -> str | None:
    """Hydra's shell completion calls `tinylm -sc query=SHELL` with the line typed so far in COMP_LINE
    ("tinylm pretrain mod"): return the subcommand named there, after rewriting COMP_LINE to what the
    subcommand's Hydra app expects ("tinylm mod"). None when no subcommand is complete yet."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    complete_words = words if line.endswith(" ") else words[:-1]
    if len(complete_words) < 2 or complete_words[1] not in COMMANDS:
        return None
    head = line.index(words[1]) + len(words[1])
    os.environ["COMP_LINE"] = words[0] + line[head:]
    if "COMP_POINT" in os.environ:
        os.environ["COMP_POINT"] = str(max(0, int(os.environ["COMP_POINT"]) - (head - len(words[0]))))
    return words[1]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-sc", "--shell-completion") for a in argv[:1]) and any(a.startswith("query=") for a in argv):
        command = _completion_query(argv)
        if command is None:  # still typing the subcommand: offer the subcommands
            typed = os.environ.get("COMP_LINE", "").split()[1:2] or [""]
            print(" ".join(c for c in COMMANDS if c.startswith(typed[0])))
            return
        rest = argv
    elif not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    else:
        command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; use one of {', '.join(COMMANDS)} (tinylm --help)", file=sys.stderr)
        sys.exit(2)
    module = COMMANDS[command][0]
    sys.argv = [sys.argv[0] if sys.argv and sys.argv[0] else "tinylm", *rest]
    # The app runs as __main__ (alter_sys: its dataclasses resolve their type hints there), which
    # sets argv[0] to the module's file; except when installing shell completion, whose script
    # Hydra writes for the name in argv[0], which must stay `tinylm`.
    installing = any(a.startswith(("install=", "uninstall=")) for a in rest)
    if importlib.util.find_spec(module) is None:
        print(f"error: `tinylm {command}` needs module {module}, which this installation lacks; update tinylm", file=sys.stderr)
        sys.exit(2)
    runpy.run_module(module, run_name="__main__", alter_sys=not installing)
