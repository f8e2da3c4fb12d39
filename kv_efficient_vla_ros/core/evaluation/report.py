"""Writing a closed-loop evaluation: JSON, a Markdown table, a success PNG and image strips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..accelerators.config import PRUNE, REUSE, SELECT, split_row
from .closed_loop import EpisodeOutcome, EvalSetup, strategy_of


def write_json(path: Path, payload: dict) -> None:
    """Atomically: an interrupted run leaves the last complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


AGREEMENT = " Agreement: share of ticks whose 7 action tokens equal `full`'s on the same frames."
SELECTION = (
    f" `{SELECT}` rows: EfficientVLA token selection, {{keep}} patch tokens per frame, in the same token budget."
)


PRUNING = f" `{PRUNE}` rows: EfficientVLA layer pruning, {{count}} LLM layer(s) dropped by `{{file}}`."
REUSE_NOTE = (
    f" `{REUSE}` rows: VLA-Cache token reuse with the YAML defaults; share of frame token-layers reused: {{shares}}."
)


def _with(accelerator: str, rows) -> list[str]:
    """The rows (names) that run with ``accelerator``."""
    return [name for name in rows if accelerator in split_row(name)[1]]


def _accelerator_notes(setup: EvalSetup, results: dict) -> str:
    notes = ""
    if _with(SELECT, setup.strategies):
        notes += SELECTION.format(keep=setup.keep_tokens or "half the")
    if _with(PRUNE, setup.strategies):
        notes += PRUNING.format(count=setup.prune_layers, file=setup.layer_importance)
    if reusing := _with(REUSE, results):
        notes += REUSE_NOTE.format(shares=", ".join(f"{n} {results[n]['reused_share']:.0%}" for n in reusing))
    return notes


def _gates(setup: EvalSetup) -> str:
    """The gate (and option overrides) of every gated series, as ` series: gate;` clauses."""
    clauses = []
    for series in setup.series():
        if strategy_of(series) != "gated":
            continue
        options = setup.cache_options(series)
        checkpoint = options.pop("gate_checkpoint") or "untrained (seeded)"
        overrides = "".join(f", {k} {v}" for k, v in options.items())
        clauses.append(f" `{series}`: gate `{checkpoint}`{overrides};")
    return "".join(clauses)


def markdown(setup: EvalSetup, results: dict, command: str) -> str:
    budgets = ", ".join(str(b) for b in setup.budgets_frames)
    lines = [
        f"# Closed-loop success: `{setup.task}`",
        "",
        f"`{command}`",
        "",
        f"Checkpoint `{setup.checkpoint}`; history budget {budgets} frames ({setup.recent_chunks} recent chunks "
        f"always kept); rope_compact {setup.rope_compact};{_gates(setup)} at most {setup.max_steps} control steps "
        "at 5 Hz. Every row ran the same seeds, none of which was used in training."
        + (AGREEMENT if setup.agreement else "")
        + _accelerator_notes(setup, results),
        "",
        "| row | budget (frames) | success | 95 % Wilson interval | episodes | mean ticks | agreement with full "
        "| policy tick ms (median) | summarized chunks (mean) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lo, hi = r["wilson95"]
        agreement, tick = r.get("action_agreement_with_full"), r.get("tick_ms_median")
        lines.append(
            f"| {name} | {r.get('budget_frames') or '-'} | {100 * r['success_rate']:.1f} % | "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] | {r['episodes']} | {r['mean_ticks']:.1f} | "
            f"{'-' if agreement is None else f'{100 * agreement:.1f} %'} | {'-' if tick is None else f'{tick:.1f}'} | "
            f"{r.get('mean_summaries', 0.0):.2f} |"
        )
    if len(setup.budgets_frames) > 1:
        lines += ["", *_by_budget(setup, results)]
    return "\n".join(lines) + "\n"


def _by_budget(setup: EvalSetup, results: dict) -> list[str]:
    """Success (and agreement with `full`, where measured) per series and budget: the comparison at a glance."""
    budgets = setup.budgets_frames
    lines = [
        "Success per budget (agreement with `full` in parentheses where measured):",
        "",
        "| series | " + " | ".join(f"{b} frames" for b in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for series in dict.fromkeys(r["strategy"] for r in results.values()):
        rows = {r["budget_frames"]: r for r in results.values() if r["strategy"] == series}
        cells = []
        for budget in budgets:
            r = rows.get(budget, rows.get(0))  # an unbounded row holds for every budget
            agreement = r.get("action_agreement_with_full")
            agreed = "" if agreement is None else f" ({100 * agreement:.0f} %)"
            cells.append(f"{100 * r['success_rate']:.0f} %{agreed}")
        lines.append(f"| {series} | " + " | ".join(cells) + " |")
    return lines


def plot_success(setup: EvalSetup, results: dict, path: Path) -> Path:
    if len(setup.budgets_frames) > 1:
        return _plot_success_vs_budget(setup, results, path)
    names = list(results)
    rates = np.array([100 * results[n]["success_rate"] for n in names])
    lo = np.array([100 * results[n]["wilson95"][0] for n in names])
    hi = np.array([100 * results[n]["wilson95"][1] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    bars = ax.bar(names, rates, color=["0.5" if n == "expert" else "C0" for n in names])
    below, above = np.clip(rates - lo, 0, None), np.clip(hi - rates, 0, None)  # 0 - 1e-17 at the ends
    ax.errorbar(names, rates, yerr=[below, above], fmt="none", ecolor="k", capsize=4)
    for bar, rate in zip(bars, rates, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, 2, f"{rate:.0f}", ha="center", color="white", fontsize=9)
    ax.axhline(50, ls=":", color="0.4", lw=1)
    n = max(results[name]["episodes"] for name in names)
    ax.set(
        ylim=(0, 100),
        ylabel="success (%), 95 % Wilson interval",
        title=f"{setup.task}: {n} seeds, history budget {setup.budgets_frames[0]} frames "
        f"({setup.recent_chunks} recent); dotted: chance",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_success_vs_latency(setup: EvalSetup, results: dict, path: Path) -> Path:
    """Each policy row at (median tick latency, success with its interval): the accelerators' frontier."""
    rows = {name: r for name, r in results.items() if r.get("tick_ms_median") is not None}
    fig, ax = plt.subplots(figsize=(8.5, 5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, r) in enumerate(rows.items()):
        rate = 100 * r["success_rate"]
        lo, hi = (100 * w for w in r["wilson95"])
        ax.errorbar(r["tick_ms_median"], rate, yerr=[[max(rate - lo, 0)], [max(hi - rate, 0)]], marker="o",
                    capsize=3, color=colors[i % len(colors)])  # fmt: skip
        # named at the point: a legend of a dozen rows cannot be matched by colour; alternate sides
        ax.annotate(name, (r["tick_ms_median"], rate), xytext=(5, 6 if i % 2 else -11), textcoords="offset points",
                    fontsize=7, color=colors[i % len(colors)])  # fmt: skip
    ax.axhline(50, ls=":", color="0.4", lw=1)
    n = max((r["episodes"] for r in rows.values()), default=0)
    ax.set(
        ylim=(0, 100),
        xlabel="policy tick latency, median (ms)",
        ylabel="success (%), 95 % Wilson interval",
        title=f"{setup.task}: {n} seeds, one run; history budget {setup.budgets_frames[0]} frames",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_success_vs_budget(setup: EvalSetup, results: dict, path: Path) -> Path:
    """Success per series against the budget; with ``--agreement`` a second panel: agreement with `full`."""
    agreeing = any(r.get("action_agreement_with_full") is not None for r in results.values())
    fig, axes = plt.subplots(1, 2 if agreeing else 1, figsize=(13 if agreeing else 8, 4.5), squeeze=False)
    ax = axes[0, 0]
    budgets = np.array(setup.budgets_frames)
    series = list(dict.fromkeys(r["strategy"] for r in results.values()))
    for i, strategy in enumerate(series):
        rows = [r for r in results.values() if r["strategy"] == strategy]
        rate = np.array([100 * r["success_rate"] for r in rows])
        lo = np.clip(rate - np.array([100 * r["wilson95"][0] for r in rows]), 0, None)
        hi = np.clip(np.array([100 * r["wilson95"][1] for r in rows]) - rate, 0, None)
        if len(rows) == 1:  # unbounded: one value for every budget
            ax.axhline(rate[0], color=f"C{i}", ls="--", lw=1.2, label=f"{strategy} (unbounded)")
            ax.axhspan(rate[0] - lo[0], rate[0] + hi[0], color=f"C{i}", alpha=0.08)
        else:
            x = budgets + 0.04 * (i - 4)  # a small offset keeps the intervals apart
            ax.errorbar(x, rate, yerr=[lo, hi], marker="o", capsize=3, color=f"C{i}", label=strategy)
    n = max(r["episodes"] for r in results.values())
    ax.set(
        xticks=budgets,
        ylim=(0, 102),
        xlabel="history budget (frames, recent window included)",
        ylabel="success (%), 95 % Wilson interval",
        title=f"{setup.task}: {n} seeds per point, {setup.recent_chunks} recent chunks",
    )
    if agreeing:
        ax = axes[0, 1]
        for i, strategy in enumerate(series):
            rows = [r for r in results.values() if r["strategy"] == strategy]
            if any(r.get("action_agreement_with_full") is None for r in rows):
                continue
            agreement = [100 * r["action_agreement_with_full"] for r in rows]
            if len(rows) == 1:  # unbounded (`none`)
                ax.axhline(agreement[0], color=f"C{i}", ls="--", lw=1.2)
            else:
                ax.plot(budgets, agreement, marker="o", color=f"C{i}", label=strategy)
        ax.set(
            xticks=budgets,
            ylim=(0, 102),
            xlabel="history budget (frames, recent window included)",
            ylabel="ticks with full's 7 action tokens (%)",
            title="action agreement with full, on each row's own episodes",
        )
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=8, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.84 if agreeing else 0.78, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_strips(outcomes: dict[str, list[EpisodeOutcome]], path: Path, seed: int, every: int = 2) -> Path | None:
    """One row per strategy: the frames it acted on in episode ``seed`` (every ``every``-th tick)."""
    rows = [
        (name, o) for name, episodes in outcomes.items() for o in episodes if o.seed == seed and o.frames is not None
    ]
    if not rows:
        return None
    width = max(len(o.frames[::every]) for _, o in rows)
    side = rows[0][1].frames.shape[1]
    fig, axes = plt.subplots(len(rows), 1, figsize=(width * 0.9, 1.05 * len(rows)), squeeze=False)
    for ax, (name, outcome) in zip(axes[:, 0], rows, strict=True):
        frames = outcome.frames[::every]
        canvas = np.full((side, width * side, 3), 255, np.uint8)
        for i, frame in enumerate(frames):
            canvas[:, i * side : (i + 1) * side] = frame
        ax.imshow(canvas)
        ax.set_xticks([(i + 0.5) * side for i in range(len(frames))], [str(i * every) for i in range(len(frames))])
        ax.set_yticks([])
        verdict = "success" if outcome.success else "failure"
        ax.set_ylabel(f"{name}\n{verdict}", rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=7)
    cue = rows[0][1]
    side_name = "left" if cue.cue_side > 0 else "right"
    fig.suptitle(f"seed {seed}: cue on the {side_name} at tick {cue.cue_step}; x axis: tick", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
