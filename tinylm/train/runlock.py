"""One process per run directory: an exclusive OS lock (fcntl.flock) on the directory itself.

The kernel releases the lock when its holder dies (kill -9 included), so there is no stale lock
to clean up, and taking it writes nothing into the directory (a rejected launch leaves it as it
was). The holder's PID is read back from /proc/locks for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hydra.experimental.callback import Callback

from tinylm.errors import InputError


def _holder_pid(path: Path) -> str:
    """The PID holding a flock on `path`, from /proc/locks (Linux); '?' elsewhere."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters carry a "->" field)
            if "FLOCK" in parts and "->" not in parts and len(parts) >= 6 and parts[5] == dev:
                return parts[4]
    except OSError:
        pass
    return "?"


class RunLock:
    """Hold an exclusive lock on `run_dir` (created if missing) until release() or process death."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise InputError(f"run directory {self.run_dir} is a file; set hydra.run.dir to a folder")
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise InputError(f"run directory {self.run_dir} is in use by another tinylm process (PID {_holder_pid(self.run_dir)}); "
                             "wait for it to finish or stop it, or set hydra.run.dir to another folder") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.release()
        # A launch rejected after taking the lock (bad input found while preparing) leaves no
        # empty folder that it made itself behind.
        if exc_type is not None and self.created and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()


class RunDirIsFolder(Callback):
    """Hydra callback (conf/pretrain.yaml): hydra.run.dir naming a file is one `error:` line and
    exit 2 before Hydra tries to create the folder (which would end in a traceback)."""

    def on_run_start(self, config, **kwargs) -> None:
        import sys

        run_dir = Path(str(config.hydra.run.dir))
        if run_dir.exists() and not run_dir.is_dir():
            print(f"error: hydra.run.dir={run_dir} is a file; set hydra.run.dir to a folder", file=sys.stderr)
            sys.exit(2)
