"""Shared plumbing for the `python -m tinylm.<app>` entry points."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from tinylm.errors import InputError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


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
