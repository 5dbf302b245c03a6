"""Download TinyStories (Eldan & Li 2023) into the layout `data=tinystories` reads.

    python data_prep/download_tinystories.py --out data/tinystories             # V2 (GPT-4 stories)
    python data_prep/download_tinystories.py --out data/tinystories --version v1
    python data_prep/download_tinystories.py --out data/tinystories --files A-train.txt A-valid.txt

Files come from the Hugging Face dataset roneneldan/TinyStories (TinyStoriesV2-GPT4-train.txt and
-valid.txt, about 2.2 GB + 22 MB; v1: TinyStories-train.txt / -valid.txt) and keep their names;
stories are separated by <|endoftext|> lines. Then
    make pretrain ARGS="data=tinystories data.root=OUT"
Offline, it stops with one line saying how to supply the files by hand (--files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tinylm.data.download import (  # noqa: F401
    TINYSTORIES_FILES,
    TINYSTORIES_PAGE,
    TINYSTORIES_URL,
    OfflineError,
    fetch,
)
from tinylm.errors import InputError


def install_files(files: list[Path], out: Path, names: tuple[str, str]) -> list[Path]:
    """Copy a local train file and valid file under the official names (temp name, then rename),
    after checking they look like TinyStories (an <|endoftext|> separator in the first MB)."""
    placed = []
    for src, name in zip(files, names):
        if not src.is_file():
            raise InputError(f"--files: {src} does not exist")
        with open(src, "rb") as f:
            if b"<|endoftext|>" not in f.read(1 << 20):
                raise InputError(f"--files: {src} has no <|endoftext|> separator in its first MB; is it TinyStories?")
        dest = out / name
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        placed.append(dest)
    return placed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/tinystories)")
    ap.add_argument("--version", choices=sorted(TINYSTORIES_FILES), default="v2")
    ap.add_argument("--files", type=Path, nargs=2, metavar=("TRAIN", "VALID"), help="install local copies instead")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    names = TINYSTORIES_FILES[args.version]
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.files:
            placed = install_files(args.files, args.out, names)
        else:
            placed = [fetch(TINYSTORIES_URL.format(name=name), args.out / name, timeout=args.timeout,
                            manual_hint=f"download {name} from {TINYSTORIES_PAGE} (Files) and run again with "
                                        "--files TRAIN VALID")
                      for name in names]
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in placed:
        print(f"{p} ({p.stat().st_size / 1e6:.1f} MB)")
    print(f'next: make pretrain ARGS="data=tinystories data.root={args.out}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
