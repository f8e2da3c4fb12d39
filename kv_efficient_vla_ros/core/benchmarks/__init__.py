"""Benchmarks: measured numbers, printed and written to JSON, with the command that produced them."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str | Path, result: dict, table: str, command: str) -> None:
    """``out`` (JSON) and the Markdown table beside it, headed by the command that produced them."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"`{command.strip()}`\n\n{table}\n")
    print(table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
