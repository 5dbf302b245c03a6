"""Download the official BabyLM corpus into the layout `data=babylm` reads.

    python data_prep/download_babylm.py --out data/babylm                   # train_10M + dev (OSF)
    python data_prep/download_babylm.py --out data/babylm --track 100M --test
    python data_prep/download_babylm.py --out data/babylm --source hf       # the BabyLM-community hub mirror
    python data_prep/download_babylm.py --out data/babylm --archive train_10M.zip dev.zip   # zips you have

Result: OUT/train_10M/<domain>.train (or train_100M/), OUT/dev/<domain>.dev, OUT/test/<domain>.test,
each folder with a SHA256SUMS; then
    make data ARGS="data=babylm data.root=OUT/train_10M"
Sources: the OSF project https://osf.io/ad7qg/ (text_data/: train_10M.zip, train_100M.zip, dev.zip,
test.zip) or the Hugging Face datasets BabyLM-community/BabyLM-2026-Strict-Small, -Strict and
BabyLM-community/BabyLM-dev. Offline, it stops with one line saying how to supply the files by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tinylm.data.download import (
    BABYLM_HF,
    BABYLM_OSF,
    BABYLM_OSF_PAGE,
    OfflineError,
    fetch,
    install_babylm_folder,
    unpack_babylm_zip,
)
from tinylm.errors import InputError


def from_osf(out: Path, parts: list[str], track: str, timeout: float) -> None:
    with tempfile.TemporaryDirectory(dir=out, prefix=".download.") as tmp:
        for part in parts:
            archive = fetch(BABYLM_OSF[part], Path(tmp) / f"{part}.zip", timeout=timeout,
                            manual_hint=f"download {part}.zip from {BABYLM_OSF_PAGE} (text_data/) and run "
                                        f"again with --archive {part}.zip")
            report(unpack_babylm_zip(archive, out, track))


def from_hf(out: Path, parts: list[str], track: str) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError("--source hf needs huggingface_hub (pip install huggingface_hub) or use --source osf") from None
    for part in parts:
        repo = BABYLM_HF.get(part)
        if repo is None:
            raise InputError(f"the hub mirror has no {part} split; use --source osf for it")
        with tempfile.TemporaryDirectory(dir=out, prefix=".download.") as tmp:
            try:
                snapshot_download(repo, repo_type="dataset", local_dir=tmp)
            except Exception as e:  # offline (LocalEntryNotFoundError, connection errors), gated, ...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise OfflineError(f"cannot download the hub dataset {repo} ({first}); no network? download it by "
                                   f"hand (huggingface-cli download {repo} --repo-type dataset --local-dir DIR) "
                                   "and run again with --folder DIR") from None
            report(install_babylm_folder(Path(tmp), out, track))


def report(placed: dict[str, list[str]]) -> None:
    for folder, names in placed.items():
        print(f"{folder}/: {', '.join(names)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/babylm)")
    ap.add_argument("--track", choices=("10M", "100M"), default="10M", help="strict-small (10M) or strict (100M)")
    ap.add_argument("--test", action="store_true", help="also the test split")
    ap.add_argument("--source", choices=("osf", "hf"), default="osf")
    ap.add_argument("--archive", type=Path, nargs="+", help="unpack these zips instead of downloading")
    ap.add_argument("--folder", type=Path, help="lay out the files of this folder instead of downloading")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a silent connection is dropped")
    args = ap.parse_args(argv)
    track = f"train_{args.track}"
    parts = [track, "dev"] + (["test"] if args.test else [])
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.archive:
            for archive in args.archive:
                if not archive.is_file():
                    raise InputError(f"--archive {archive} does not exist")
                report(unpack_babylm_zip(archive, args.out, track))
        elif args.folder:
            report(install_babylm_folder(args.folder, args.out, track))
        elif args.source == "osf":
            from_osf(args.out, parts, track, args.timeout)
        else:
            from_hf(args.out, parts, track)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f'next: make data ARGS="data=babylm data.root={args.out / track}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
