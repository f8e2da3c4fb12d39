"""Benchmark reports: Markdown tables and plots of measured results, and writing them (measuring is elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# KV-Efficient VLA (arXiv 2509.21354), as reported by its authors, not measured here.
PAPER = {"flops_saved": 0.246, "speedup": 1.34, "kv_reduction": 1.87}
# The project's targets for `gated` against `full` at a 32-frame horizon (docs/benchmarks.md).
TARGETS = {"kv_reduction": 4.0, "speedup": 2.0, "flops_saved": 0.5, "agreement": 0.95, "gate_share": 0.02}


def write_results(out: str | Path, result: dict, table: str, command: str) -> None:
    """``out`` (JSON) and the Markdown table beside it, headed by the command that produced them."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"`{command.strip()}`\n\n{table}\n")
    print(table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def _accelerator_note(r: dict, table: dict) -> str:
    note = ""
    selection = r.get("token_selection")
    if selection and any("+select" in name for name in table):
        note += (
            f" `+select` rows: EfficientVLA token selection, {selection['keep_tokens']} patch tokens per frame "
            f"({selection['relevant_share']:.0%} by the prompt's attention, the rest for diversity)."
        )
    reuse = r.get("token_reuse")
    if reuse and any("+reuse" in name for name in table):
        shares = ", ".join(f"{name} {s['reused_share']:.0%}" for name, s in table.items() if "+reuse" in name)
        note += (
            f" `+reuse` rows: VLA-Cache token reuse (similarity >= {reuse['similarity_threshold']}, at most "
            f"{reuse['max_reuse_share']:.0%} of a frame, the {reuse['relevant_share']:.0%} most attended patches "
            f"recomputed, layer-adaptive {reuse['layer_adaptive']}); share of frame token-layers reused: {shares}."
        )
    if r.get("pruned_llm_layers") and any("+prune" in name for name in table):
        note += f" `+prune` rows: EfficientVLA layer pruning, the LLM cut to {r['pruned_llm_layers']} layers."
    return note


def cache_markdown(r: dict) -> str:
    c = r["cache"]
    h = 32 if 32 in r["per_horizon"] else max(r["per_horizon"])
    table = r["per_horizon"][h]
    gpu = r.get("gpu_peak_bytes") or {}
    peaks = "; peak GPU memory " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in gpu.items()) if gpu else ""
    lines = [
        f"Model: {r['checkpoint']}; LLM {r['llm']}, vision {r.get('vision', '?')}, {r['device']}, "
        f"{r['torch_threads']} threads{peaks}; frames: {r['frames']}. "
        f"Budget {c['budget_tokens']} tokens, chunk {c['chunk_tokens'] or 'one frame'}, recent {c['recent_chunks']}, "
        f"rope_compact {c['rope_compact']}, gate {c['gate_checkpoint'] or 'untrained'}. Ratios are to `full` in "
        "the same run." + _accelerator_note(r, table),
        "",
        f"**At {h} frames:**",
        "",
        "| strategy | KV peak MB | KV x smaller | tick ms median | p95 | speedup | vision | prefill | decode | gate "
        "| evict | page faults/tick | GFLOPs/tick | FLOPs saved | same action as full | action MAE | logit MAE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in table.items():
        st = s["stage_ms_median"]
        lines.append(
            f"| {name} | {s['kv_bytes_peak'] / 1e6:.2f} | {_fmt(s.get('kv_reduction'), '.2f')} "
            f"| {s['latency_ms_median']:.1f} | {s['latency_ms_p95']:.1f} | {_fmt(s.get('speedup'), '.2f')} "
            f"| {st['vision']:.1f} | {st['prefill']:.1f} | {st['decode']:.1f} | {st['gate']:.2f} | {st['evict']:.2f} "
            f"| {_fmt(s.get('page_faults_median'), '.0f')} | {s['flops_per_tick'] / 1e9:.2f} "
            f"| {_fmt(s.get('flops_saved'), '.1%')} "
            f"| {_fmt(s.get('action_agreement'), '.0%')} | {_fmt(s.get('action_mae'), '.4f')} "
            f"| {_fmt(s.get('logit_mae'), '.4f')} |"
        )
    lines.append(
        f"| *paper (KV-Efficient VLA, reported)* | | {PAPER['kv_reduction']:.2f} | | | {PAPER['speedup']:.2f} "
        f"| | | | | | | | {PAPER['flops_saved']:.1%} | | | |"
    )
    if "gated" in table and "kv_reduction" in table["gated"]:
        g = table["gated"]
        checks = [
            ("KV memory >= 4x smaller", g["kv_reduction"], TARGETS["kv_reduction"], ".2f"),
            ("tick latency >= 2x lower", g["speedup"], TARGETS["speedup"], ".2f"),
            ("FLOPs >= 50% lower", g["flops_saved"], TARGETS["flops_saved"], ".1%"),
            ("same action as full >= 95%", g["action_agreement"], TARGETS["agreement"], ".0%"),
        ]
        lines += [
            "",
            f"**`gated` against the targets (docs/benchmarks.md) at {h} frames:**",
            "",
            "| target | measured | met |",
            "|---|---:|---|",
        ]
        for label, value, target, pattern in checks:
            lines.append(f"| {label} | {format(value, pattern)} | {'yes' if value >= target else 'no'} |")
        share = g["gate_share"]
        lines.append(
            f"| gate overhead < 2% of a tick | {share:.2%} | {'yes' if share < TARGETS['gate_share'] else 'no'} |"
        )
        rivals = [p for p in ("window", "sink_window", "attention", "random") if p in table]
        beaten = [p for p in rivals if g["action_agreement"] > table[p]["action_agreement"]]
        lines.append(
            f"| beats {', '.join(rivals)} on agreement | {len(beaten)} of {len(rivals)} | "
            f"{'yes' if rivals and len(beaten) == len(rivals) else 'no'} |"
        )
    lines += ["", "**By horizon** (tick ms median / KV peak MB / same action as full):", ""]
    horizons = r["horizons"]
    lines.append("| strategy | " + " | ".join(f"{h} frames" for h in horizons) + " |")
    lines.append("|---|" + "---:|" * len(horizons))
    for name in table:
        cells = []
        for hh in horizons:
            s = r["per_horizon"][hh][name]
            cells.append(
                f"{s['latency_ms_median']:.0f} / {s['kv_bytes_peak'] / 1e6:.1f} / "
                f"{_fmt(s.get('action_agreement'), '.0%')}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cache_plot(r: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons = r["horizons"]
    strategies = list(r["per_horizon"][horizons[0]])
    panels = [
        ("tick latency, median (ms)", lambda s: s["latency_ms_median"]),
        ("KV cache peak (MB)", lambda s: s["kv_bytes_peak"] / 1e6),
        ("GFLOPs per tick", lambda s: s["flops_per_tick"] / 1e9),
        ("same action as full", lambda s: s.get("action_agreement", np.nan)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, value) in zip(axes, panels, strict=True):
        for name in strategies:
            ax.plot(horizons, [value(r["per_horizon"][h][name]) for h in horizons], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("episode length (frames)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(horizons, [str(h) for h in horizons])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"eviction strategies, {r['llm']} ({r['device']}), budget {r['cache']['budget_tokens']} tokens")
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def single_frame_markdown(r: dict) -> str:
    full, act = r["latency_ms"]["full_vocab"], r["latency_ms"]["action_ids"]
    head = r["output_layer_ms_per_token"]
    lines = [
        f"Single-frame latency, {r['llm']}, {r['vision_backbone_id']}, CPU fp32, {r['torch_threads']} threads, "
        f"median of {r['repeats']}:",
        "",
        "| decoding | vision ms | LLM (prefill + 7 tokens) ms | total ms |",
        "|---|---:|---:|---:|",
        f"| full vocabulary (official) | {full['vision']:.1f} | {full['llm']:.1f} | {full['total']:.1f} |",
        f"| action ids only | {act['vision']:.1f} | {act['llm']:.1f} | {act['total']:.1f} |",
        "",
        f"Action-ids-only decoding: LLM time x{full['llm'] / act['llm']:.2f} faster, total "
        f"x{full['total'] / act['total']:.2f}; output layer per token {head['full_vocab']:.3f} ms -> "
        f"{head['action_ids']:.3f} ms.",
    ]
    return "\n".join(lines)
