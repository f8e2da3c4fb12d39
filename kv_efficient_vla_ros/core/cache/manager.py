"""The persistent cache of one episode: ``[BOS] [chunk] [chunk] ...`` in one storage, plus its eviction strategy.

:class:`ChunkedCache` is the ``transformers`` ``Cache`` the model's forward writes into (one view per
layer of a single storage), and it owns the tick: the runner appends a frame and the prompt in one
forward (:meth:`reserve_positions`, the forward, :meth:`add_frame`), decodes, :meth:`crop` s the prompt
and action tokens back off, then calls :meth:`end_tick`: the strategy scores the chunks older than the recent
window, decides keep / summarize / drop, the budget is enforced by lowest utility, and one gather
rebuilds the storage; with ``rope_compact`` the keys are then re-rotated to contiguous positions.
:meth:`snapshot` / :meth:`restore` put a failed tick back, strategy and gate state included.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import Cache

from .config import CacheConfig
from .rope import RopeRotator
from .storage import KEYS, VALUES, KVStorage, StorageLayer
from .strategies import Chunk, Decision, EvictionStrategy
from .summary import summarize

if TYPE_CHECKING:
    from ..openvla.modeling import OpenVLAModel
    from .gate import RecurrentGate

logger = logging.getLogger(__name__)


@dataclass
class UpdateReport:
    kept: int = 0
    summarized: int = 0
    dropped: int = 0
    utilities: list[float] = field(default_factory=list)
    gate_s: float = 0.0  # scoring (the gate's forward for `gated`)
    evict_s: float = 0.0  # deciding, gathering, summarizing, re-rotating


@dataclass(frozen=True)
class CacheSnapshot:
    """What a tick changes before it evicts: restored by :meth:`ChunkedCache.restore`."""

    length: int
    tick: int
    next_chunk_id: int
    chunks: tuple[Chunk, ...]
    strategy: Any
    rebuilds: int


class ChunkedCache(Cache):
    def __init__(
        self,
        config: CacheConfig,
        storage: KVStorage,
        rotator: RopeRotator,
        frame_tokens: int,
        strategy: EvictionStrategy | None = None,
    ):
        config.validate(frame_tokens)
        super().__init__(layers=[StorageLayer(storage, i) for i in range(storage.num_layers)])
        self.config = config
        self.storage = storage
        self.rotator = rotator
        self.frame_tokens = frame_tokens
        self.chunk_len = config.chunk_size(frame_tokens)
        self.strategy = strategy if strategy is not None else config.build_strategy()
        self.summary_tokens = self.strategy.summary_tokens or config.summary_tokens
        self.strategy.bind(storage)
        self.rebuilds = 0  # storage rebuilds by eviction: a snapshot taken before one cannot be restored
        self.reset()

    @classmethod
    def from_model(
        cls,
        model: OpenVLAModel,
        config: CacheConfig,
        gate: RecurrentGate | None,
        tick_text_tokens: int,
    ) -> ChunkedCache:
        """The cache for ``model`` (after transformers' ``DynamicCache(config=...)``): storage sized once for the
        bounded history plus one tick (a frame and ``tick_text_tokens`` of prompt and action tokens), on the
        model's device and dtype, and the model's RoPE."""
        vla, text = model.config, model.config.text_config
        frame_tokens = vla.num_patches
        strategy = config.build_strategy(gate)
        history = config.budget_tokens if strategy.bounded else 0  # unbounded strategies grow as they go
        storage = KVStorage(
            text.num_hidden_layers,
            1,
            text.num_key_value_heads,
            vla.head_dim,
            1 + history + 2 * frame_tokens + tick_text_tokens,
            model.dtype,
            model.device,
        )
        rotator = RopeRotator.for_model(model.language_model.model.rotary_emb, text)
        return cls(config, storage, rotator, frame_tokens, strategy)

    def reset(self) -> None:
        """A new episode: no tokens, no chunks, tick 0, the strategy's episode state (the gate's too) cleared."""
        self.storage.truncate(0)
        self.chunks: list[Chunk] = []
        self.next_chunk_id = 0
        self.tick = 0
        self.strategy.reset()

    def snapshot(self) -> CacheSnapshot:
        return CacheSnapshot(
            self.length,
            self.tick,
            self.next_chunk_id,
            tuple(replace(c) for c in self.chunks),
            self.strategy.snapshot(),
            self.rebuilds,
        )

    def restore(self, snapshot: CacheSnapshot) -> None:
        """Go back to ``snapshot``: tokens appended since are cut off, chunks, tick and strategy state restored.

        Until :meth:`end_tick` rebuilds the storage a tick only appends, so the tokens below the snapshot's
        length are still the snapshot's. A failure during the rebuild leaves no consistent state to go back
        to: then the episode starts over (empty cache), with a warning.
        """
        if snapshot.rebuilds != self.rebuilds:
            logger.warning("the cache failed while rebuilding its storage: starting a new episode")
            self.reset()
            return
        self.storage.truncate(snapshot.length)
        self.tick, self.next_chunk_id = snapshot.tick, snapshot.next_chunk_id
        self.chunks = [replace(c) for c in snapshot.chunks]
        self.strategy.restore(snapshot.strategy)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens (transformers' ``Cache.crop``): the prompt and action tokens."""
        length = self.length + tokens_to_remove
        if tokens_to_remove > 0 or length < min(self.length, 1 + self.history_tokens):
            raise ValueError(f"crop({tokens_to_remove}): only tokens after the history chunks can be cropped")
        self.storage.truncate(length)

    @property
    def length(self) -> int:
        return self.storage.length

    @property
    def history_tokens(self) -> int:
        return sum(c.length for c in self.chunks)

    @property
    def next_position(self) -> int:
        return int(self.storage.positions[self.length - 1]) + 1 if self.length else 0

    @property
    def max_position(self) -> int:
        return int(self.storage.positions[: self.length].max()) if self.length else -1

    def reserve_positions(self, n: int) -> torch.Tensor:
        """Positions for ``n`` tokens about to be appended (recorded before the forward writes them)."""
        positions = torch.arange(self.next_position, self.next_position + n)
        self.storage.ensure_capacity(self.length + n)
        self.storage.set_positions(self.length, positions)
        return positions

    def add_frame(self, end: int | None = None) -> list[Chunk]:
        """The ``frame_tokens`` tokens just written, up to ``end`` (default: the last), become this tick's chunks."""
        start = (self.length if end is None else end) - self.frame_tokens
        n = self.frame_tokens // self.chunk_len
        layers = self.strategy.descriptor_layers
        descriptors = self.chunk_descriptors(start, n, layers) if layers else [None] * n
        new = [
            Chunk(self.next_chunk_id + i, self.tick, self.chunk_len, descriptor=d) for i, d in enumerate(descriptors)
        ]
        self.next_chunk_id += n
        self.chunks += new
        self.strategy.observe(new)
        return new

    def chunk_descriptors(self, start: int, n: int, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Mean value vector at ``layers`` of each of the ``n`` chunks stored from ``start`` on: ``[n, D]``."""
        values = self.storage.buffer[list(layers), VALUES, :, :, start : start + n * self.chunk_len]
        layers, batch, heads, _, dim = values.shape
        means = values.reshape(layers, batch, heads, n, self.chunk_len, dim).mean(dim=(1, 4))  # [layers, H, n, D]
        return list(means.permute(2, 0, 1, 3).reshape(n, -1).float())

    def observe_attention(self, mass: torch.Tensor) -> None:
        """Attention mass this tick's queries put on each cached token (physical order, BOS first)."""
        self.strategy.observe_attention(mass.float().cpu()[1:])

    def end_tick(self) -> UpdateReport:
        """Judge the chunks that left the recent window, enforce the budget, and start the next tick."""
        report = self._evict() if self.strategy.evicts else UpdateReport()
        self.tick += 1
        return report

    def _evict(self) -> UpdateReport:
        report = UpdateReport()
        tick = self.tick
        t0 = time.perf_counter()
        self.strategy.prepare(self.chunks)
        protected = self.config.recent_chunks if self.strategy.protects_recent else 0
        candidates = self.chunks[: max(0, len(self.chunks) - protected)]
        utilities = self.strategy.score(candidates, tick)
        t1 = time.perf_counter()
        decisions = self.strategy.decide(candidates, utilities)
        decisions = self._enforce_budget(candidates, utilities, decisions)
        report.utilities = [round(u, 4) for u in utilities.tolist()]
        report.kept = sum(d is Decision.KEEP for d in decisions)
        report.summarized = sum(d is Decision.SUMMARIZE for d in decisions)
        report.dropped = sum(d is Decision.DROP for d in decisions)
        self._apply({c.id: d for c, d in zip(candidates, decisions, strict=True)})
        report.gate_s, report.evict_s = t1 - t0, time.perf_counter() - t1
        return report

    def _enforce_budget(
        self, candidates: list[Chunk], utilities: torch.Tensor, decisions: list[Decision]
    ) -> list[Decision]:
        if not self.strategy.bounded:
            return decisions
        size = {Decision.KEEP: None, Decision.SUMMARIZE: self.summary_tokens, Decision.DROP: 0}
        decisions = list(decisions)

        def tokens() -> int:
            recent = sum(c.length for c in self.chunks[len(candidates) :])
            kept = [size[d] if size[d] is not None else c.length for c, d in zip(candidates, decisions, strict=True)]
            return recent + sum(kept)

        for i in torch.argsort(utilities, stable=True).tolist():  # lowest utility first
            if tokens() <= self.config.budget_tokens:
                break
            decisions[i] = Decision.DROP
        return decisions

    def _apply(self, decisions: dict[int, Decision]) -> None:
        """Rebuild the storage: kept tokens and summaries in temporal order, keys re-rotated on the way."""
        self.rebuilds += 1
        live = self.storage.live()
        positions = self.storage.positions[: self.length]
        starts, start = {}, 1
        for chunk in self.chunks:
            starts[chunk.id] = start
            start += chunk.length
        to_summarize = [c for c in self.chunks if decisions.get(c.id) is Decision.SUMMARIZE]
        if to_summarize:
            summary, summary_positions = summarize(
                live,
                positions,
                [starts[c.id] for c in to_summarize],
                self.chunk_len,
                self.summary_tokens,
                self.rotator,
            )
            live = torch.cat([live, summary], dim=4)
            positions = torch.cat([positions, summary_positions])
        order, kept_chunks, summary_offset = [torch.zeros(1, dtype=torch.long)], [], self.length
        for chunk in self.chunks:
            decision = decisions.get(chunk.id, Decision.KEEP)
            if decision is Decision.DROP:
                continue
            if decision is Decision.SUMMARIZE:
                s = self.summary_tokens
                order.append(torch.arange(summary_offset, summary_offset + s))
                summary_offset += s
                chunk.length, chunk.summarized = s, True
            else:
                order.append(torch.arange(starts[chunk.id], starts[chunk.id] + chunk.length))
            kept_chunks.append(chunk)
        self.chunks = kept_chunks
        self._rebuild(live, positions, torch.cat(order))

    def _rebuild(self, source: torch.Tensor, source_positions: torch.Tensor, order: torch.Tensor) -> None:
        """Storage slot i takes ``source[..., order[i], :]``; with rope_compact, at position i.

        Slots that already hold their token at its final position are left alone, so keeping
        everything costs nothing and dropping late chunks touches only the tail.
        """
        n = len(order)
        old = source_positions[order]
        new = torch.arange(n) if self.config.rope_compact or not self.strategy.keeps_positions else old
        untouched = (order == torch.arange(n)) & (old == new)
        first = int(torch.nonzero(~untouched)[0]) if not bool(untouched.all()) else n
        if first < n:
            index = order[first:].to(source.device)
            keys = source[:, KEYS].index_select(3, index)
            values = source[:, VALUES].index_select(3, index)
            delta = new[first:] - old[first:]
            if bool(delta.any()):  # tokens that only move keep their rotation: a copy, no RoPE arithmetic
                keys = self.rotator.rotate(keys, delta)
            self.storage.buffer[:, KEYS, :, :, first:n] = keys
            self.storage.buffer[:, VALUES, :, :, first:n] = values
            self.storage.positions[first:n] = new[first:]
        self.storage.truncate(n)
