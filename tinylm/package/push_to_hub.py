"""Push this BabyLM submission folder to a Hugging Face model repository.

    python push_to_hub.py USER/NAME [--private] [--token TOKEN] [--dry-run] [--force]

The folder's top level (the final model, model card, compliance report, predictions) goes to the
`main` branch; every `chck_{N}M/` folder becomes the branch (revision) `chck_{N}M`, holding exactly
that milestone's files, so `from_pretrained(REPO, revision="chck_10M", trust_remote_code=True)`
loads the model after 10M words, as the BabyLM 2025 evaluation pipeline does.

Order: create the repository (if missing), then each milestone branch (created from the repository's
first commit, then filled), then `main`. Re-running it updates everything in place.

Needs huggingface_hub, network access and a token with write access (--token, HF_TOKEN, or
`huggingface-cli login`). --dry-run prints the plan and touches nothing (no network, no token).
A folder whose compliance.json says it is not BabyLM-compliant is refused unless --force.
Written by tinylm (python -m tinylm.package); needs nothing from tinylm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MILESTONE = re.compile(r"^chck_(\d+)M$")
MAIN_IGNORE = ["chck_*", "chck_*/**", "__pycache__", "__pycache__/**", "*.pyc"]


def milestones(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := MILESTONE.match(p.name))]
    return [p for _, p in sorted(found)]


def _size(folder: Path) -> tuple[int, int]:
    files = [f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    return len(files), sum(f.stat().st_size for f in files)


def plan(folder: Path, repo_id: str, private: bool) -> list[dict]:
    """The Hub calls a push makes, in order (huggingface_hub.HfApi method names and arguments)."""
    for required in ("config.json", "model.safetensors"):
        if not (folder / required).exists():
            raise SystemExit(f"error: {folder} has no {required}: not a tinylm submission folder")
    steps: list[dict] = [{"call": "create_repo", "repo_id": repo_id, "repo_type": "model", "private": private, "exist_ok": True}]
    for m in milestones(folder):
        if not (m / "config.json").exists() or not (m / "model.safetensors").exists():
            raise SystemExit(f"error: {m} is not a complete model folder (config.json, model.safetensors)")
        n, size = _size(m)
        steps.append({"call": "create_branch", "repo_id": repo_id, "branch": m.name, "revision": "<first commit>",
                      "exist_ok": True})
        steps.append({"call": "upload_folder", "repo_id": repo_id, "folder_path": str(m), "revision": m.name,
                      "delete_patterns": ["*"], "files": n, "bytes": size, "commit_message": f"milestone {m.name}"})
    n, size = _size(folder)
    n -= sum(_size(m)[0] for m in milestones(folder))
    steps.append({"call": "upload_folder", "repo_id": repo_id, "folder_path": str(folder), "revision": "main",
                  "ignore_patterns": MAIN_IGNORE, "files": n, "commit_message": "final model"})
    return steps


def describe(step: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in step.items() if k not in ("call", "files", "bytes"))
    extra = f"  [{step['files']} files" + (f", {step['bytes'] / 1e6:.1f} MB]" if "bytes" in step else "]") if "files" in step else ""
    return f"{step['call']}({args}){extra}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def push(steps: list[dict], token: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    first_commit = None
    for i, step in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {describe(step)}", flush=True)
        kwargs = {k: v for k, v in step.items() if k not in ("call", "files", "bytes")}
        if step["call"] == "create_repo":
            print(f"    {api.create_repo(**kwargs)}")
            commits = api.list_repo_commits(step["repo_id"], repo_type="model")
            first_commit = commits[-1].commit_id if commits else None
        elif step["call"] == "create_branch":
            kwargs["revision"] = first_commit
            api.create_branch(**kwargs)
        else:
            info = api.upload_folder(**kwargs)
            print(f"    {getattr(info, 'commit_url', info)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo_id", help="the model repository, USER/NAME or ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", default=None, help="a write token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; no network, no token")
    parser.add_argument("--force", action="store_true", help="push even if compliance.json says the run is not compliant")
    parser.add_argument("--folder", default=str(HERE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    compliance = folder / "compliance.json"
    if compliance.exists() and not json.loads(compliance.read_text()).get("compliant", False) and not args.force:
        print(f"error: {compliance} says this run is not BabyLM-compliant; fix the run, or pass --force", file=sys.stderr)
        return 2
    steps = plan(folder, args.repo_id, args.private)
    if args.dry_run:
        print(f"dry run: {len(steps)} step(s) would push {folder} to https://huggingface.co/{args.repo_id}")
        for i, step in enumerate(steps, 1):
            print(f"{i}. {describe(step)}")
        return 0
    if _offline():
        print("error: offline (HF_HUB_OFFLINE is set): nothing was pushed; run this again with network access "
              "(and a token), or pass --dry-run to see the plan", file=sys.stderr)
        return 3
    try:
        import huggingface_hub
    except ImportError:
        print("error: huggingface_hub is not installed: pip install huggingface_hub", file=sys.stderr)
        return 3
    token = args.token or os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not token:
        print("error: no Hugging Face token: pass --token, set HF_TOKEN, or run `huggingface-cli login`; nothing was pushed",
              file=sys.stderr)
        return 3
    try:
        push(steps, token)
    except Exception as e:  # network down, bad token, no permission: one clear line
        kind = type(e).__name__
        hint = "cannot reach the Hugging Face Hub" if isinstance(e, (ConnectionError, OSError)) or "Connect" in kind else "push failed"
        print(f"error: {hint} ({kind}: {str(e).splitlines()[0] if str(e) else ''}); re-run to resume, "
              "finished steps are kept", file=sys.stderr)
        return 1
    print(f"pushed to https://huggingface.co/{args.repo_id} (main + {len(milestones(folder))} milestone branch(es))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
