"""Small helpers used across the package: content hashes and atomic file writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoint manifests, tokenizers,
    downloads, corpus files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sha256_of(*parts: Any) -> str:
    """A stable hex digest of JSON-serialisable parts (cache keys for tokenizers and shards)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (reading it means setting it: put straight back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write a file so that readers see either the old content or the new, never a torn write:
    temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: a run file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place only when the block
    succeeds; on any error (or a kill) nothing appears at `final`. Files written inside should be
    flushed; the directory's contents are fsynced before the rename. An existing `final` is swapped
    out only after the new one is complete (a kill in between leaves it under its .old name, which
    `sweep_leftovers` puts back). Temporary names carry the writer's PID (see sweep_leftovers)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.{temp_tag()}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(tmp)
        old = None
        if final.exists():  # an identical cache entry built concurrently, or a rewrite
            old = final.parent / f".{final.name}.{temp_tag()}.old.tmp"
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]*)\.(?P<old>old\.)?(?:[^.]*\.)?tmp$")


def temp_tag(pid: int | None = None) -> str:
    """`pid<PID>-<host>`: who writes a temporary entry. The host matters on shared filesystems: a
    PID is only checked (and its leftovers removed) on the machine that wrote it."""
    host = re.sub(r"[^A-Za-z0-9]", "-", socket.gethostname())[:40]
    return f"pid{os.getpid() if pid is None else pid}-{host}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_leftovers(folder: str | Path) -> list[str]:
    """Remove the temporary files and folders (write_atomic / atomic_dir) that dead processes left in
    `folder`; a folder swapped out just before a kill (`.NAME.pidN.old.tmp` with no NAME) is put back.
    Returns one line per thing done. Entries of live processes are left alone."""
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    for entry in sorted(folder.iterdir()):
        m = _TEMP_NAME.match(entry.name)
        if not m or temp_tag(int(m.group("pid"))) != f"pid{m.group('pid')}-{m.group('host')}" or pid_alive(int(m.group("pid"))):
            continue  # not a temporary name, another machine's, or a live process's
        target = folder / m.group("name")
        if m.group("old") and not target.exists():
            os.rename(entry, target)
            done.append(f"restored {target} (a replacement was interrupted)")
            continue
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else entry.stat().st_size
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(f"removed {entry} ({size / 1e6:.1f} MB left by dead process {m.group('pid')})")
    return done
