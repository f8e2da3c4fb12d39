"""Eviction policies: each one small class with a ``score`` behind one interface (after NVIDIA kvpress).

``score`` gives every candidate chunk (the chunks older than the recent window) a utility, higher =
more worth keeping. ``decide`` turns utilities into keep / summarize / drop; the cache then enforces
the token budget by dropping the lowest-utility candidates, for every policy alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch

from .config import CacheConfig
from .gate import AGE_SCALE, RecurrentGate


class Decision(Enum):
    KEEP = "keep"
    SUMMARIZE = "summarize"
    DROP = "drop"


@dataclass
class Chunk:
    """A span of history tokens; the cache holds ``[BOS] + chunks`` in temporal order."""

    id: int  # increases with time over the episode
    tick: int  # the frame it came from
    length: int  # tokens it occupies now
    summarized: bool = False
    descriptor: torch.Tensor | None = None  # for the gate, computed once when the chunk enters
    attention: float = 0.0  # running attention mass from prompt/action queries


class EvictionPolicy:
    name: ClassVar[str]
    wants_attention: ClassVar[bool] = False
    wants_descriptors: ClassVar[bool] = False

    def __init__(self, config: CacheConfig):
        self.config = config

    def reset(self) -> None:
        """Forget episode state (a new episode starts)."""

    def observe(self, new_chunks: list[Chunk]) -> None:
        """See the chunks this tick added, oldest first."""

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        raise NotImplementedError

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        return [Decision.KEEP] * len(candidates)


class FullPolicy(EvictionPolicy):
    """Never evicts: the reference every other policy is measured against."""

    name = "full"

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.ones(len(candidates))


class NoHistoryPolicy(EvictionPolicy):
    """Drops everything after each tick: stock single-frame OpenVLA."""

    name = "none"

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.zeros(len(candidates))

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        return [Decision.DROP] * len(candidates)


class WindowPolicy(EvictionPolicy):
    """Newest first: the budget holds the most recent chunks."""

    name = "window"

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        ids = torch.tensor([c.id for c in candidates], dtype=torch.float32)
        return (ids + 1) / (ids.max() + 1) if len(ids) else ids


class SinkWindowPolicy(WindowPolicy):
    """StreamingLLM: the episode's first chunks stay as attention sinks, then the newest."""

    name = "sink_window"

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        utilities = super().score(candidates, tick)
        sinks = torch.tensor([c.id < self.config.sink_chunks for c in candidates], dtype=torch.bool)
        return torch.where(sinks, torch.full_like(utilities, 2.0), utilities)


class AttentionPolicy(EvictionPolicy):
    """H2O / SnapKV: keep the chunks the prompt and action queries attend to most."""

    name = "attention"
    wants_attention = True

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        mass = torch.tensor([c.attention for c in candidates], dtype=torch.float32)
        return mass / mass.max().clamp_min(1e-12) if len(mass) else mass


class RandomPolicy(EvictionPolicy):
    """Seeded random utilities: the control every informed policy must beat."""

    name = "random"

    def __init__(self, config: CacheConfig):
        super().__init__(config)
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.rand(len(candidates), generator=self.generator)


class GatedPolicy(EvictionPolicy):
    """KV-Efficient VLA: the recurrent gate's utility; keep, summarize or drop by threshold."""

    name = "gated"
    wants_descriptors = True

    def __init__(self, config: CacheConfig, gate: RecurrentGate):
        super().__init__(config)
        self.gate = gate

    def reset(self) -> None:
        self.gate.reset_state()

    @torch.inference_mode()
    def observe(self, new_chunks: list[Chunk]) -> None:
        self.gate.observe(torch.stack([c.descriptor for c in new_chunks]))

    @torch.inference_mode()
    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        if not candidates:
            return torch.zeros(0)
        descriptors = torch.stack([c.descriptor for c in candidates])
        extras = torch.tensor([[(tick - c.tick) / AGE_SCALE, float(c.summarized)] for c in candidates])
        return self.gate.utilities(descriptors, extras.to(descriptors)).float().cpu()

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        decisions = []
        for chunk, utility in zip(candidates, utilities.tolist(), strict=True):
            if utility >= self.config.keep_threshold or (chunk.summarized and utility >= self.config.summary_threshold):
                decisions.append(Decision.KEEP)
            elif utility >= self.config.summary_threshold:
                decisions.append(Decision.SUMMARIZE)
            else:
                decisions.append(Decision.DROP)
        return decisions


POLICY_CLASSES: dict[str, type[EvictionPolicy]] = {
    cls.name: cls
    for cls in (FullPolicy, NoHistoryPolicy, WindowPolicy, SinkWindowPolicy, AttentionPolicy, RandomPolicy, GatedPolicy)
}


def make_policy(config: CacheConfig, gate: RecurrentGate | None = None) -> EvictionPolicy:
    if config.policy == "gated":
        if gate is None:
            raise ValueError("policy 'gated' needs a gate")
        return GatedPolicy(config, gate)
    return POLICY_CLASSES[config.policy](config)
