"""The accelerators' parameters (no torch here: the ROS parameter code imports them)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option

# Suffixes of a benchmark or evaluation row's name: `gated+select+prune` is `gated` with both accelerators.
SELECT = "+select"  # EfficientVLA token selection
PRUNE = "+prune"  # EfficientVLA LLM layer pruning
REUSE = "+reuse"  # VLA-Cache token reuse
ACCELERATORS = (SELECT, PRUNE, REUSE)


def split_row(name: str) -> tuple[str, frozenset[str]]:
    """A row name's strategy (or series, `gated:lstm`) and its accelerator suffixes; unknown ones raise."""
    base, *suffixes = name.split("+")
    accelerators = frozenset("+" + s for s in suffixes)
    unknown = sorted(accelerators - set(ACCELERATORS))
    if unknown:
        raise ValueError(f"row {name!r}: unknown accelerator(s) {unknown}; expected any of {ACCELERATORS}")
    return base, accelerators


def default_keep_tokens(num_patches: int) -> int:
    """Tokens per frame of the ``+select`` rows when none is given: half the patches (a 16-token summary
    still fits in a one-frame chunk of the 64-patch shipped policy)."""
    return num_patches // 2


@dataclass
class TokenSelectionConfig:
    keep_tokens: int = option(
        0, "EfficientVLA token selection: patch tokens of each frame the LLM and the cache get; 0 = all (off)."
    )
    relevant_share: float = option(
        0.5,
        "Share of keep_tokens chosen as the most task-relevant (the prompt's attention on the previous "
        "frame); the rest are chosen for diversity.",
    )
    relevance_layer: int = option(-1, "LLM layer whose attention measures relevance; -1 = the middle layer.")

    @property
    def enabled(self) -> bool:
        return self.keep_tokens > 0

    def validate(self, num_patches: int, num_layers: int) -> None:
        """Raise ``ValueError`` naming the parameter when the values cannot work for this model."""
        if not 0 <= self.keep_tokens <= num_patches:
            raise ValueError(f"keep_tokens={self.keep_tokens} must lie in [0, {num_patches}] (0: off)")
        if not 0.0 <= self.relevant_share <= 1.0:
            raise ValueError(f"relevant_share={self.relevant_share} must lie in [0, 1]")
        if not -1 <= self.relevance_layer < num_layers:
            raise ValueError(f"relevance_layer={self.relevance_layer} must lie in [-1, {num_layers - 1}]")

    def layer(self, num_layers: int) -> int:
        return num_layers // 2 if self.relevance_layer < 0 else self.relevance_layer


@dataclass
class LayerPruningConfig:
    prune_layers: int = option(
        0, "EfficientVLA layer pruning: LLM layers dropped, the least important by layer_importance; 0 = none."
    )
    layer_importance: str = option(
        "", "JSON of per-layer importances from kv-vla-calibrate-layers for this checkpoint (needed to prune)."
    )

    def validate(self) -> None:
        if self.prune_layers < 0:
            raise ValueError(f"prune_layers={self.prune_layers} must be >= 0")
        if self.prune_layers and not self.layer_importance:
            raise ValueError("prune_layers needs layer_importance: run kv-vla-calibrate-layers for the checkpoint")


@dataclass
class TokenReuseConfig:
    enabled: bool = option(
        False,
        "VLA-Cache token reuse: patches nearly unchanged since the previous frame take that frame's keys and "
        "values instead of being recomputed.",
    )
    similarity_threshold: float = option(
        0.996, "Cosine similarity of a patch's pixels to the same patch of the previous frame needed for reuse."
    )
    max_reuse_share: float = option(
        0.6, "At most this share of a frame's tokens is reused, the most similar first (VLA-Cache's top-k cap)."
    )
    relevant_share: float = option(
        0.4,
        "Share of the frame's patches always recomputed: those the prompt attended to most on the previous tick.",
    )
    layer_adaptive: bool = option(
        True,
        "Reuse share per layer from the previous tick's attention entropy (VLA-Cache eq. 9): layers whose "
        "attention has not yet focused recompute more; false: every reusable token is reused at every layer.",
    )
    entropy_sensitivity: float = option(
        1.0,
        "k of VLA-Cache eq. 9: layer l reuses min(1, k * cumulative relative entropy drop up to l) of the "
        "reusable tokens.",
    )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the parameter when a value cannot work."""
        for name in ("similarity_threshold", "max_reuse_share", "relevant_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        if self.entropy_sensitivity < 0:
            raise ValueError(f"entropy_sensitivity={self.entropy_sensitivity} must be >= 0")
