"""Cache parameters: the cache's own, plus the chosen strategy's (defined on the strategy classes).

In the YAML (``config/policy.yaml``) all of them are flat keys under ``cache.``: :meth:`CacheConfig.parameters`
lists them with their descriptions, :meth:`CacheConfig.from_flat` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..options import described_fields, option
from .gate import RecurrentGate
from .strategies import STRATEGY_NAMES, EvictionStrategy, make_strategy, strategy_options


@dataclass
class CacheConfig:
    strategy: str = option(
        "gated",
        f"Eviction strategy: {' | '.join(STRATEGY_NAMES)} (full: never evict, the reference; none: no history, "
        "stock OpenVLA; gated: the learned recurrent gate).",
    )
    chunk_tokens: int = option(0, "Tokens per chunk; 0 = one frame's patches. Must divide the frame's patch count.")
    recent_chunks: int = option(2, "The W newest chunks are always kept verbatim.")
    budget_tokens: int = option(
        1024, "Hard cap on history tokens kept between ticks (BOS excluded); ignored by full and none."
    )
    summary_tokens: int = option(16, "Tokens a summarized chunk shrinks to (gated).")
    rope_compact: bool = option(
        True,
        "Keep the history's positions gap-free (keys after an evicted chunk re-rotated to close the gap); "
        "false: keys keep the positions they were encoded at, gaps where chunks went.",
    )
    position_limit: int = option(
        0,
        "Positions stay below this: when the next tick would pass it, the kept keys are re-rotated to "
        "0, 1, 2, ... (once, not every tick); 0 = the model's max_position_embeddings.",
    )
    # the strategies' parameters by name (sink_chunks, attention_decay, keep_threshold, ...); defaults on the classes
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parameters(cls) -> list[tuple[str, Any, str]]:
        """(name, default, description) of every flat ``cache.*`` parameter, the cache's first."""
        own = [p for p in described_fields(cls) if p[0] != "options"]
        return own + strategy_options()

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> CacheConfig:
        """From flat parameters (the YAML's ``cache.*`` keys); strategy parameters go to ``options``."""
        own = {f.name for f in fields(cls)} - {"options"}
        return cls(
            **{k: v for k, v in values.items() if k in own},
            options={k: v for k, v in values.items() if k not in own},
        )

    def flat(self) -> dict[str, Any]:
        """Every flat parameter with its value (strategy parameters not given: their defaults)."""
        values = {name: getattr(self, name) for name, _, _ in described_fields(type(self)) if name != "options"}
        return values | {name: self.options.get(name, default) for name, default, _ in strategy_options()}

    def build_strategy(self, gate: RecurrentGate | None = None) -> EvictionStrategy:
        return make_strategy(self.strategy, self.options, gate)

    def validate(self, frame_tokens: int) -> None:
        """Raise ``ValueError`` naming the parameter when the combination cannot work."""
        strategy = self.build_strategy()  # validates the name and the strategy's own parameters
        chunk = self.chunk_size(frame_tokens)
        if chunk <= 0 or frame_tokens % chunk:
            raise ValueError(f"chunk_tokens={self.chunk_tokens} must divide the {frame_tokens} patch tokens of a frame")
        if self.position_limit < 0:
            raise ValueError(f"position_limit={self.position_limit} must be >= 0 (0: the model's limit)")
        if self.recent_chunks < 1:
            raise ValueError("recent_chunks must be at least 1 (the newest frame)")
        summary = strategy.summary_tokens or self.summary_tokens
        if strategy.summarizes and not 1 <= summary < chunk:
            raise ValueError(f"summary_tokens={summary} must lie in [1, chunk size {chunk}) for {self.strategy}")
        if strategy.bounded:
            floor = max(self.recent_chunks * chunk, frame_tokens)
            if self.budget_tokens < floor:
                raise ValueError(
                    f"budget_tokens={self.budget_tokens} cannot hold the recent window "
                    f"({self.recent_chunks} chunks of {chunk} tokens, at least one frame): use >= {floor}"
                )

    def chunk_size(self, frame_tokens: int) -> int:
        return self.chunk_tokens or frame_tokens
