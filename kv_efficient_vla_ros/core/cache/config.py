"""Cache parameters: the one definition, mirrored by the YAML (``config/policy.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option

POLICIES = ("full", "none", "window", "sink_window", "attention", "random", "gated")
GATE_TYPES = ("gru", "lstm")


@dataclass
class CacheConfig:
    policy: str = option(
        "gated",
        "full (never evict: the reference) | none (no history: stock OpenVLA) | window | sink_window | "
        "attention | random | gated (the learned recurrent gate)",
    )
    chunk_tokens: int = option(0, "Tokens per chunk; 0 = one frame's patches. Must divide the frame's patch count.")
    recent_chunks: int = option(2, "The W newest chunks are always kept verbatim.")
    budget_tokens: int = option(
        1024, "Hard cap on history tokens kept between ticks (BOS excluded); ignored by full and none."
    )
    summary_tokens: int = option(16, "Tokens a summarized chunk shrinks to (gated policy).")
    keep_threshold: float = option(0.5, "Gate utility at or above which a chunk stays verbatim.")
    summary_threshold: float = option(
        0.25, "Gate utility at or above which (and below keep_threshold) a chunk is summarized; below: dropped."
    )
    gate_type: str = option("gru", "gru | lstm (used when no gate_checkpoint is given).")
    gate_hidden: int = option(64, "Gate hidden size (used when no gate_checkpoint is given).")
    gate_checkpoint: str = option("", "Directory with gate.safetensors + gate.json; empty = a seeded, untrained gate.")
    rope_compact: bool = option(True, "Re-rotate kept keys so positions stay contiguous and bounded.")
    sink_chunks: int = option(1, "sink_window: the episode's first chunks kept as attention sinks.")
    attention_decay: float = option(
        0.5, "attention: weight of past ticks in the running attention mass (0 = this tick only)."
    )
    seed: int = option(0, "Seed of the random policy and of an untrained gate.")

    @property
    def bounded(self) -> bool:
        return self.policy not in ("full", "none")

    def validate(self, frame_tokens: int) -> None:
        """Raise ``ValueError`` naming the parameter when the combination cannot work."""
        if self.policy not in POLICIES:
            raise ValueError(f"policy {self.policy!r}: expected one of {POLICIES}")
        if self.gate_type not in GATE_TYPES:
            raise ValueError(f"gate_type {self.gate_type!r}: expected one of {GATE_TYPES}")
        chunk = self.chunk_size(frame_tokens)
        if chunk <= 0 or frame_tokens % chunk:
            raise ValueError(f"chunk_tokens={self.chunk_tokens} must divide the {frame_tokens} patch tokens of a frame")
        if self.recent_chunks < 1:
            raise ValueError("recent_chunks must be at least 1 (the newest frame)")
        if not 0.0 <= self.summary_threshold <= self.keep_threshold <= 1.0:
            raise ValueError("need 0 <= summary_threshold <= keep_threshold <= 1")
        if not 1 <= self.summary_tokens < chunk:
            raise ValueError(f"summary_tokens={self.summary_tokens} must lie in [1, chunk size {chunk})")
        if not 0.0 <= self.attention_decay < 1.0:
            raise ValueError("attention_decay must lie in [0, 1)")
        if self.bounded:
            floor = max(self.recent_chunks * chunk, frame_tokens)
            if self.budget_tokens < floor:
                raise ValueError(
                    f"budget_tokens={self.budget_tokens} cannot hold the recent window "
                    f"({self.recent_chunks} chunks of {chunk} tokens, at least one frame): use >= {floor}"
                )

    def chunk_size(self, frame_tokens: int) -> int:
        return self.chunk_tokens or frame_tokens
