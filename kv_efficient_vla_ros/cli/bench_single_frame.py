"""``kv-vla-bench-single-frame``: single-frame latency, and what decoding over the action ids saves."""

from __future__ import annotations

import argparse

from ..core.benchmarks.report import single_frame_markdown, write_results
from ..core.benchmarks.single_frame import run
from ..core.openvla.tiny import ensure_default_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-bench-single-frame",
        description="Measure single-frame policy latency on CPU with full-vocabulary vs action-ids-only "
        "decoding; prints a Markdown table and writes JSON.",
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--instruction", default="lift the red cube")
    parser.add_argument("--out", default="results/single_frame.json", help="JSON output path")
    args = parser.parse_args(argv)
    result = run(args.checkpoint or str(ensure_default_checkpoint()), args.repeats, args.instruction)
    command = f"kv-vla-bench-single-frame --repeats {args.repeats}"
    write_results(args.out, result, single_frame_markdown(result), command)


if __name__ == "__main__":
    main()
