"""Downloading and unpacking corpora (used by data_prep/download_*.py).

Everything is written to a temporary name and renamed, so an interrupted download or unpack leaves
no partial file or folder under the final name. Without a network every fetch fails with one
`OfflineError` line naming the URL and saying how to supply the file by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

from tinylm.errors import InputError
from tinylm.utils import sha256_file

# The official BabyLM release (text_data of OSF project ad7qg), as direct OSF download links.
BABYLM_OSF_PAGE = "https://osf.io/ad7qg/"
BABYLM_OSF = {
    "train_10M": "https://osf.io/download/y7djq/",
    "train_100M": "https://osf.io/download/ywea7/",
    "dev": "https://osf.io/download/uyd7v/",
    "test": "https://osf.io/download/ftwu3/",
}
# The BabyLM community mirror on the Hugging Face hub.
BABYLM_HF = {
    "train_10M": "BabyLM-community/BabyLM-2026-Strict-Small",
    "train_100M": "BabyLM-community/BabyLM-2026-Strict",
    "dev": "BabyLM-community/BabyLM-dev",
}
TINYSTORIES_PAGE = "https://huggingface.co/datasets/roneneldan/TinyStories"
TINYSTORIES_URL = TINYSTORIES_PAGE + "/resolve/main/{name}"
TINYSTORIES_FILES = {
    "v2": ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"),  # GPT-4 stories only
    "v1": ("TinyStories-train.txt", "TinyStories-valid.txt"),
}


class OfflineError(InputError):
    """The network is unreachable (or the server refused): the message says what to do instead."""


def fetch(url: str, dest: Path, manual_hint: str, timeout: float = 30.0, chunk: int = 1 << 20) -> Path:
    """Stream `url` to `dest` (via dest.part, renamed when complete); returns dest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "tinylm"}), timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            with open(part, "wb") as f:
                while block := r.read(chunk):
                    f.write(block)
                    done += len(block)
                    if total:
                        print(f"\r{dest.name}: {done / 1e6:.0f} / {total / 1e6:.0f} MB", end="", flush=True)
            if total and done != total:
                raise OfflineError(f"{url}: the download stopped at {done} of {total} bytes; run again")
        print()
        os.replace(part, dest)
        return dest
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise OfflineError(f"cannot download {url} ({reason}); no network? {manual_hint}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _domain_and_kind(name: str) -> tuple[str, str] | None:
    """'childes.train' -> ('childes', 'train'); 'bnc_spoken.dev.txt' -> ('bnc_spoken', 'dev')."""
    base = name.removesuffix(".txt")
    for kind in ("train", "dev", "test"):
        if base.endswith("." + kind):
            return base[: -len(kind) - 1], kind
    return None


def install_babylm_files(files: list[tuple[str, Callable[[], BinaryIO]]], out: Path, track: str) -> dict[str, list[str]]:
    """Place (file name, opener) pairs in the layout data=babylm reads (copied in streaming blocks):
    out/<track>/<domain>.train, out/dev/<domain>.dev, out/test/<domain>.test. Each target folder is
    built under a temporary name and renamed (an existing one is replaced). Returns what went where."""
    groups: dict[str, list[tuple[str, Callable[[], BinaryIO]]]] = {}
    for name, content in files:
        found = _domain_and_kind(Path(name).name)
        if found is None:
            continue
        domain, kind = found
        folder = track if kind == "train" else kind
        groups.setdefault(folder, []).append((f"{domain}.{kind}", content))
    if not groups:
        raise InputError(f"no <domain>.train / .dev / .test files found among {[n for n, _ in files][:10]}")
    placed = {}
    out.mkdir(parents=True, exist_ok=True)
    for folder, entries in sorted(groups.items()):
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{folder}.", suffix=".tmp"))
        try:
            lines = []
            for name, opener in sorted(entries, key=lambda e: e[0]):
                target = tmp / name
                with opener() as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                lines.append(f"{sha256_file(target)}  {name}")
            (tmp / "SHA256SUMS").write_text("\n".join(lines) + "\n")
            os.chmod(tmp, 0o755)
            final = out / folder
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        placed[folder] = sorted(n for n, _ in entries)
    return placed


def unpack_babylm_zip(archive: Path, out: Path, track: str | None = None) -> dict[str, list[str]]:
    """Unpack an official BabyLM zip (train_10M.zip, train_100M.zip, dev.zip, test.zip, or the
    older babylm_data.zip with babylm_10M/ ... folders) into the data=babylm layout. Only member
    base names are used (no path from the archive is trusted); __MACOSX and hidden files are skipped."""
    archive = Path(archive)
    if not zipfile.is_zipfile(archive):
        raise InputError(f"{archive} is not a zip archive (an HTML error page instead of the file?)")
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.infolist() if not m.is_dir() and "__MACOSX" not in m.filename
                   and not Path(m.filename).name.startswith(".")]
        if track is None:
            dirs = {part for m in members for part in Path(m.filename).parts[:-1]}
            track = next((d for d in ("train_10M", "train_100M") if d in dirs), None)
            if track is None:
                track = "train_100M" if any("100M" in d for d in dirs) else "train_10M"
        return install_babylm_files([(Path(m.filename).name, partial(z.open, m)) for m in members], out, track)


def install_babylm_folder(folder: Path, out: Path, track: str) -> dict[str, list[str]]:
    """Copy the <domain>.train/.dev/.test(.txt) files found under `folder` (e.g. a hub snapshot)
    into the data=babylm layout."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return install_babylm_files([(p.name, partial(open, p, "rb")) for p in files], out, track)

