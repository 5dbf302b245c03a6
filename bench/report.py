"""What every benchmark script prints and saves: an aligned text table, and a results file named
after the card and the date under bench/results/ (the scripts import this as `report`: run them as
`python bench/<script>.py`, which puts bench/ on the import path)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

# `make bench` points this outside the tracked tree (TINYLM_BENCH_RESULTS=runs/bench); a figure meant
# for the repository goes to bench/results/ (the default when the scripts run directly, or --out).
RESULTS = Path(os.environ.get("TINYLM_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def text_table(header: tuple, rows: list[tuple], right: bool = False) -> str:
    """Columns padded to their widest cell, `|` between them, a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = " | ".join(f"{{:{'>' if right else ''}{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), "-+-".join("-" * w for w in widths), *(fmt.format(*r) for r in rows)])


def card_slug(card: str, cuda: bool) -> str:
    """"NVIDIA H100 80GB HBM3" -> "NVIDIA_H100_80GB_HBM3"; any CPU description -> "cpu"."""
    return card.replace(" ", "_") if cuda else "cpu"


def save(prefix: str, card: str, cuda: bool, title: str, body: str, out: str | None = None) -> Path:
    """Write `# title` and `body` (in a code block) to `out`, or bench/results/<prefix>_<card>_<date>.md."""
    path = Path(out) if out else RESULTS / f"{prefix}_{card_slug(card, cuda)}_{dt.date.today().isoformat()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n```\n{body}\n```\n")
    print(f"\nwritten to {path}")
    return path
