"""Success per cue side from a `kv-vla-eval` JSON of `delayed_cue`: which side a strategy falls back to.

python tools/success_by_side.py results/eval_gates_sparse_delayed_cue.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_json")
    args = parser.parse_args()
    results = json.loads(Path(args.eval_json).read_text())["results"]
    print(f"\n`python tools/success_by_side.py {args.eval_json}`\n")
    print("| row | cue on the left (+1) | cue on the right (-1) |")
    print("|---|---:|---:|")
    for row, result in results.items():
        cells = []
        for side in (1, -1):
            episodes = [e for e in result["per_episode"] if e["cue_side"] == side]
            cells.append(f"{sum(e['success'] for e in episodes)} of {len(episodes)}")
        print(f"| {row} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
