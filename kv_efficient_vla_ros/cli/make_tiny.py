"""``kv-vla-make-tiny``: write a tiny OpenVLA-format checkpoint."""

from __future__ import annotations

import argparse

from ..core.openvla.config import VISION_BACKBONES
from ..core.openvla.tiny import TinySpec, default_checkpoint_dir, write_tiny_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kv-vla-make-tiny",
        description="Write a tiny OpenVLA-format checkpoint (config.json, safetensors with official key "
        "names, tokenizer, norm_stats) that loads through the same code as openvla-7b.",
    )
    parser.add_argument("out_dir", nargs="?", help="directory to create (default: the embedded default location)")
    defaults = TinySpec()
    parser.add_argument(
        "--vision-backbone",
        default=defaults.vision_backbone_id,
        choices=[k for k in VISION_BACKBONES if k.startswith("tiny-")],
    )
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--intermediate-size", type=int, default=defaults.intermediate_size)
    parser.add_argument("--layers", type=int, default=defaults.num_layers)
    parser.add_argument("--heads", type=int, default=defaults.num_heads)
    parser.add_argument("--kv-heads", type=int, default=defaults.num_kv_heads)
    parser.add_argument("--text-vocab-size", type=int, default=defaults.text_vocab_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--shard-mb", type=float, help="split the weights into shards of at most this size")
    args = parser.parse_args(argv)
    spec = TinySpec(
        vision_backbone_id=args.vision_backbone,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        text_vocab_size=args.text_vocab_size,
        seed=args.seed,
    )
    shard_bytes = int(args.shard_mb * 2**20) if args.shard_mb else None
    out = write_tiny_checkpoint(args.out_dir or default_checkpoint_dir(), spec, shard_bytes)
    print(f"wrote tiny OpenVLA checkpoint to {out}")


if __name__ == "__main__":
    main()
