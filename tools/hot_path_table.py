"""Before/after table of `kv-vla-bench-cache` runs: tick latency by stage per policy and horizon.

python tools/hot_path_table.py LABEL=run.json [LABEL=run.json ...] > table.md
"""

from __future__ import annotations

import json
import sys

STAGES = ("vision", "prefill", "decode", "gate", "evict")


def main(argv: list[str]) -> None:
    runs = [(label, json.load(open(path))) for label, path in (arg.split("=", 1) for arg in argv)]
    first = runs[0][1]
    policies = list(first["per_horizon"][str(first["horizons"][0])])
    print("| policy | frames | " + " | ".join(f"{label} tick ms" for label, _ in runs) + " | change |")
    print("|---|---:|" + "---:|" * len(runs) + "---:|")
    for policy in policies:
        for horizon in first["horizons"]:
            ticks = [run["per_horizon"][str(horizon)][policy]["latency_ms_median"] for _, run in runs]
            change = f"{100 * (ticks[-1] / ticks[0] - 1):+.0f}%"
            print(f"| {policy} | {horizon} | " + " | ".join(f"{t:.1f}" for t in ticks) + f" | {change} |")
    horizon = str(first["horizons"][len(first["horizons"]) // 2])
    print(f"\nBy stage at {horizon} frames, median ms (" + ", ".join(STAGES) + "); evict share of the tick:\n")
    print("| policy | " + " | ".join(label for label, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for policy in policies:
        cells = []
        for _, run in runs:
            row = run["per_horizon"][horizon][policy]
            stages = row["stage_ms_median"]
            share = stages["evict"] / stages["total"]
            cells.append(" / ".join(f"{stages[s]:.1f}" for s in STAGES) + f" ({100 * share:.1f}%)")
        print(f"| {policy} | " + " | ".join(cells) + " |")
    ratio = {label: run["per_horizon"][horizon] for label, run in runs}
    print(f"\nBounded policies against `none` at {horizon} frames (tick median ratio):\n")
    print("| policy | " + " | ".join(label for label, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for policy in policies:
        if policy == "none":
            continue
        cells = [
            f"{rows[policy]['latency_ms_median'] / rows['none']['latency_ms_median']:.2f}x" for rows in ratio.values()
        ]
        print(f"| {policy} | " + " | ".join(cells) + " |")
    agreement = {label: [run["per_horizon"][horizon][p]["action_agreement"] for p in policies] for label, run in runs}
    same = len({tuple(a) for a in agreement.values()}) == 1
    print(f"\nAction agreement with `full` per policy at {horizon} frames identical across runs: {same}.")


if __name__ == "__main__":
    main(sys.argv[1:])
