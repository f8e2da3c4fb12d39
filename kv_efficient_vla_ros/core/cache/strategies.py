"""Eviction strategies: what happens to the chunks that left the recent window (after NVIDIA kvpress's presses).

Each strategy is a small dataclass: its parameters are its fields (the ones with a description are the
flat ``cache.*`` keys of the YAML) and class flags tell the cache how to treat it, so the cache never
branches on a strategy's name. ``score`` gives every candidate chunk a utility (higher = more worth
keeping) and ``decide`` turns utilities into keep / summarize / drop; the cache then enforces the token
budget of a ``bounded`` strategy by dropping the lowest-utility candidates, for every strategy alike.
A strategy's episode state (running attention, random generator, the gate's hidden state) lives on the
strategy and is reset, snapshotted and restored with the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..options import option
from .gate import GATE_TYPES, RecurrentGate, extra_features, gate_for_model

if TYPE_CHECKING:
    from .storage import KVStorage

logger = logging.getLogger(__name__)


class Decision(Enum):
    KEEP = "keep"
    SUMMARIZE = "summarize"
    DROP = "drop"


@dataclass
class Chunk:
    """A span of history tokens; the cache lists ``[BOS] + chunks`` in temporal order."""

    id: int  # increases with time over the episode
    tick: int  # the frame it came from
    length: int  # tokens it occupies now
    summarized: bool = False
    descriptor: torch.Tensor | None = None  # for the gate, computed once when the chunk enters
    slots: torch.Tensor | None = field(default=None, repr=False)  # its tokens' storage slots, in token order


def _seed() -> Any:
    return option(0, "Seed of the random strategy and of an untrained gate.")


@dataclass
class EvictionStrategy:
    """The interface; the defaults describe a strategy that judges every old chunk under the budget."""

    name: ClassVar[str]
    evicts: ClassVar[bool] = True  # False: the cache never judges a chunk (nothing to decide)
    protects_recent: ClassVar[bool] = True  # the ``recent_chunks`` newest chunks are never judged
    bounded: ClassVar[bool] = True  # the cache enforces ``budget_tokens`` on the history
    wants_attention: ClassVar[bool] = False  # the runner hands it the attention of each tick's queries
    summarizes: ClassVar[bool] = False  # may decide SUMMARIZE (then summary_tokens must fit in a chunk)
    summary_tokens: ClassVar[int | None] = None  # tokens of a summary; None = the cache's ``summary_tokens``

    def bind(self, storage: KVStorage) -> None:
        """Fit the strategy to the model whose cache it judges (called once, by the cache)."""

    @property
    def descriptor_layers(self) -> tuple[int, ...]:
        """Layers whose mean values describe a chunk when it enters; () = no descriptors needed."""
        return ()

    @property
    def warnings(self) -> list[str]:
        """What an operator must know about this strategy as configured (logged at startup)."""
        return []

    def reset(self) -> None:
        """Forget episode state (a new episode starts)."""

    def snapshot(self) -> Any:
        """Episode state, for :meth:`restore` (a rolled-back tick leaves no trace)."""
        return None

    def restore(self, state: Any) -> None:
        """Go back to a :meth:`snapshot`."""

    def observe(self, new_chunks: list[Chunk]) -> None:
        """See the chunks this tick added, oldest first."""

    def observe_attention(self, mass: torch.Tensor) -> None:
        """Attention mass this tick's queries put on each storage slot (BOS's slot 0 included)."""

    def prepare(self, chunks: list[Chunk]) -> None:
        """Before scoring: every chunk of the cache, in physical order."""

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        raise NotImplementedError

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        return [Decision.KEEP] * len(candidates)


@dataclass
class FullStrategy(EvictionStrategy):
    """Never evicts: the reference every other strategy is measured against."""

    name = "full"
    evicts = False
    bounded = False

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.ones(len(candidates))


@dataclass
class NoHistoryStrategy(EvictionStrategy):
    """Drops everything after each tick: stock single-frame OpenVLA."""

    name = "none"
    protects_recent = False
    bounded = False

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.zeros(len(candidates))

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        return [Decision.DROP] * len(candidates)


@dataclass
class WindowStrategy(EvictionStrategy):
    """Newest first: the budget holds the most recent chunks."""

    name = "window"

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        ids = torch.tensor([c.id for c in candidates], dtype=torch.float32)
        return (ids + 1) / (ids.max() + 1) if len(ids) else ids


@dataclass
class SinkWindowStrategy(WindowStrategy):
    """StreamingLLM: the episode's first chunks stay as attention sinks, then the newest."""

    name = "sink_window"
    sink_chunks: int = option(1, "sink_window: the episode's first chunks kept as attention sinks.")

    def __post_init__(self) -> None:
        if self.sink_chunks < 0:
            raise ValueError(f"sink_chunks={self.sink_chunks} must be >= 0")

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        utilities = super().score(candidates, tick)
        sinks = torch.tensor([c.id < self.sink_chunks for c in candidates], dtype=torch.bool)
        return torch.where(sinks, torch.full_like(utilities, 2.0), utilities)


@dataclass
class AttentionStrategy(EvictionStrategy):
    """H2O / SnapKV: keep the chunks the prompt and action queries attend to most (a running mass)."""

    name = "attention"
    wants_attention = True
    attention_decay: float = option(
        0.5, "attention: weight of past ticks in the running attention mass (0 = this tick only)."
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.attention_decay < 1.0:
            raise ValueError("attention_decay must lie in [0, 1)")
        self.reset()

    def reset(self) -> None:
        self.pending: torch.Tensor | None = None  # this tick's mass per history token, not yet folded
        self.mass: dict[int, float] = {}  # running mass per chunk id

    def snapshot(self) -> Any:
        return self.pending, dict(self.mass)

    def restore(self, state: Any) -> None:
        self.pending, mass = state
        self.mass = dict(mass)

    def observe_attention(self, mass: torch.Tensor) -> None:
        if self.pending is None:
            self.pending = mass
        else:
            n = min(len(mass), len(self.pending))
            self.pending = self.pending[:n] + mass[:n]

    def prepare(self, chunks: list[Chunk]) -> None:
        """Fold this tick's mass into each chunk's running mass (chunks gone from the cache are forgotten)."""
        decay, folded = self.attention_decay, {}
        for chunk in chunks:
            running = self.mass.get(chunk.id, 0.0)
            if self.pending is not None:
                running = decay * running + (1 - decay) * float(self.pending[chunk.slots].sum())
            folded[chunk.id] = running
        self.mass, self.pending = folded, None

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        mass = torch.tensor([self.mass.get(c.id, 0.0) for c in candidates], dtype=torch.float32)
        return mass / mass.max().clamp_min(1e-12) if len(mass) else mass


@dataclass
class RandomStrategy(EvictionStrategy):
    """Seeded random utilities: the control every informed strategy must beat."""

    name = "random"
    seed: int = _seed()

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def snapshot(self) -> Any:
        return self.generator.get_state()

    def restore(self, state: Any) -> None:
        self.generator.set_state(state)

    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        return torch.rand(len(candidates), generator=self.generator)


@dataclass
class GatedStrategy(EvictionStrategy):
    """KV-Efficient VLA: the recurrent gate's utility; keep, summarize or drop by threshold."""

    name = "gated"
    summarizes = True
    keep_threshold: float = option(0.5, "Gate utility at or above which a chunk stays verbatim.")
    summary_threshold: float = option(
        0.25, "Gate utility at or above which (and below keep_threshold) a chunk is summarized; below: dropped."
    )
    gate_type: str = option("gru", "gru | lstm (used when no gate_checkpoint is given).")
    gate_hidden: int = option(64, "Gate hidden size (used when no gate_checkpoint is given).")
    gate_checkpoint: str = option(
        "", "Directory with gate.safetensors + gate.json; empty = a seeded, untrained gate (arbitrary utilities)."
    )
    seed: int = _seed()
    gate: RecurrentGate | None = field(default=None, repr=False, compare=False)  # built by bind() when not given

    def __post_init__(self) -> None:
        if self.gate_type not in GATE_TYPES:
            raise ValueError(f"gate_type {self.gate_type!r}: expected one of {GATE_TYPES}")
        if not 0.0 <= self.summary_threshold <= self.keep_threshold <= 1.0:
            raise ValueError("need 0 <= summary_threshold <= keep_threshold <= 1")
        self.untrained = False

    def new_gate(self, num_layers: int, kv_heads: int, head_dim: int) -> RecurrentGate:
        """The gate these parameters describe for a model of these dimensions (loaded, or seeded and untrained)."""
        return gate_for_model(
            self.gate_type, self.gate_hidden, self.gate_checkpoint, self.seed, num_layers, kv_heads, head_dim
        )

    def bind(self, storage: KVStorage) -> None:
        if self.gate is None:
            self.gate = self.new_gate(storage.num_layers, storage.kv_heads, storage.head_dim).to(storage.device)
            self.untrained = not self.gate_checkpoint
            for warning in self.warnings:
                logger.warning(warning)

    @property
    def descriptor_layers(self) -> tuple[int, ...]:
        return self.gate.config.layers if self.gate is not None else ()

    @property
    def warnings(self) -> list[str]:
        if not self.untrained:
            return []
        return [
            "strategy 'gated' runs an untrained gate (no cache.gate_checkpoint): its utilities are arbitrary; "
            "train one with kv-vla-train-gate or set cache.gate_checkpoint (gates/tiny_gru fits the tiny checkpoint)"
        ]

    def reset(self) -> None:
        if self.gate is not None:
            self.gate.reset_state()

    def snapshot(self) -> Any:
        return self.gate.state  # replaced, never modified in place, by observe()

    def restore(self, state: Any) -> None:
        self.gate.state = state

    @torch.inference_mode()
    def observe(self, new_chunks: list[Chunk]) -> None:
        self.gate.observe(torch.stack([c.descriptor for c in new_chunks]))

    @torch.inference_mode()
    def score(self, candidates: list[Chunk], tick: int) -> torch.Tensor:
        if not candidates:
            return torch.zeros(0)
        descriptors = torch.stack([c.descriptor for c in candidates])
        extras = extra_features([tick - c.tick for c in candidates], [c.summarized for c in candidates])
        return self.gate.utilities(descriptors, extras.to(descriptors)).float().cpu()

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        decisions = []
        for chunk, utility in zip(candidates, utilities.tolist(), strict=True):
            if utility >= self.keep_threshold or (chunk.summarized and utility >= self.summary_threshold):
                decisions.append(Decision.KEEP)
            elif utility >= self.summary_threshold:
                decisions.append(Decision.SUMMARIZE)
            else:
                decisions.append(Decision.DROP)
        return decisions


@dataclass
class KvEffReferenceStrategy(GatedStrategy):
    """The rule of the KV-Efficient VLA authors' public code, as a labelled baseline: an untrained, seeded LSTM
    scores each chunk; at or above 0.5 the chunk is kept as its mean (one token), below it is dropped."""

    name = "kv_eff_ref"
    summary_tokens = 1

    def new_gate(self, num_layers: int, kv_heads: int, head_dim: int) -> RecurrentGate:
        return gate_for_model("lstm", self.gate_hidden, "", self.seed, num_layers, kv_heads, head_dim)

    def bind(self, storage: KVStorage) -> None:
        if self.gate is None:
            self.gate = self.new_gate(storage.num_layers, storage.kv_heads, storage.head_dim).to(storage.device)

    def decide(self, candidates: list[Chunk], utilities: torch.Tensor) -> list[Decision]:
        return [
            Decision.KEEP if c.summarized else Decision.SUMMARIZE if u >= 0.5 else Decision.DROP
            for c, u in zip(candidates, utilities.tolist(), strict=True)
        ]


STRATEGIES: dict[str, type[EvictionStrategy]] = {
    cls.name: cls
    for cls in (
        FullStrategy,
        NoHistoryStrategy,
        WindowStrategy,
        SinkWindowStrategy,
        AttentionStrategy,
        RandomStrategy,
        GatedStrategy,
        KvEffReferenceStrategy,
    )
}
STRATEGY_NAMES = tuple(STRATEGIES)


def _options_of(cls: type[EvictionStrategy]) -> list[tuple[str, Any, str]]:
    return [(f.name, f.default, f.metadata["help"]) for f in fields(cls) if "help" in f.metadata]


def strategy_options() -> list[tuple[str, Any, str]]:
    """(name, default, description) of every strategy parameter, each once (a shared name is one parameter)."""
    seen: dict[str, tuple[str, Any, str]] = {}
    for cls in STRATEGIES.values():
        for name, default, help in _options_of(cls):
            if name in seen and seen[name][1:] != (default, help):
                raise TypeError(f"strategy parameter {name!r} is defined twice with different defaults or meaning")
            seen.setdefault(name, (name, default, help))
    return list(seen.values())


def make_strategy(
    name: str, options: dict[str, Any] | None = None, gate: RecurrentGate | None = None
) -> EvictionStrategy:
    """The strategy ``name`` with the parameters it takes from ``options`` (others' parameters are ignored)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy {name!r}: expected one of {STRATEGY_NAMES}")
    options = dict(options or {})
    unknown = set(options) - {n for n, _, _ in strategy_options()}
    if unknown:
        raise ValueError(f"unknown cache option(s) {sorted(unknown)}: no strategy takes them")
    cls = STRATEGIES[name]
    own = {n for n, _, _ in _options_of(cls)}
    kwargs = {k: v for k, v in options.items() if k in own}
    if gate is not None and "gate" in {f.name for f in fields(cls)}:
        kwargs["gate"] = gate
    return cls(**kwargs)
