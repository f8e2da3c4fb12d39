"""The persistent cache of one episode: ``[BOS] [chunk] [chunk] ...`` in one storage, plus its eviction strategy.

:class:`ChunkedCache` is the ``transformers`` ``Cache`` the model's forward writes into (one view per
layer of a single storage), and it owns the tick: the runner appends a frame and the prompt in one
forward (:meth:`reserve_positions`, the forward, :meth:`add_frame`), decodes, :meth:`crop` s the prompt
and action tokens back off, then calls :meth:`end_tick`: the strategy scores the chunks older than the recent
window, decides keep / summarize / drop, the budget is enforced by lowest utility, and the storage
is repaired in place (:meth:`_relayout`).

Storage slots are not in temporal order: each chunk records its tokens' slots, a dropped chunk's slots are
refilled by the tokens at the tail (a copy of as many tokens as were evicted, never a shift of everything
after the hole), and each slot keeps the RoPE position its key is rotated to. Keys are re-rotated only
where a position changes: with ``rope_compact`` the kept positions are made gap-free by moving whichever
tokens are fewer (attention depends on position differences only, so the whole history may drift upward),
and when the next tick would pass the position limit every position is compacted to 0, 1, 2, ...
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
from .storage import VALUES, KVStorage, StorageLayer
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
        max_next_position: int | None = None,
    ):
        """``max_next_position``: the highest position a tick may start at (its tokens must stay below the
        model's limit); beyond it eviction compacts the positions. None: positions are never compacted."""
        config.validate(frame_tokens)
        super().__init__(layers=[StorageLayer(storage, i) for i in range(storage.num_layers)])
        self.config = config
        self.storage = storage
        self.rotator = rotator
        self.frame_tokens = frame_tokens
        self.chunk_len = config.chunk_size(frame_tokens)
        self.strategy = strategy if strategy is not None else config.build_strategy()
        self.summary_tokens = self.strategy.summary_tokens or config.summary_tokens
        self.max_next_position = max_next_position
        self.strategy.bind(storage)
        self.compactions = 0  # times every position was compacted to 0, 1, 2, ... (over the cache's life)
        self.rebuilds = 0  # storage rebuilds by eviction: a snapshot taken before one cannot be restored
        self.reset()

    @classmethod
    def from_model(
        cls,
        model: OpenVLAModel,
        config: CacheConfig,
        gate: RecurrentGate | None,
        tick_text_tokens: int,
        frame_tokens: int | None = None,
    ) -> ChunkedCache:
        """The cache for ``model`` (after transformers' ``DynamicCache(config=...)``): storage sized once for the
        bounded history plus one tick (a frame and ``tick_text_tokens`` of prompt and action tokens), on the
        model's device and dtype, the model's RoPE, and positions kept below the model's limit (or
        ``config.position_limit``). ``frame_tokens``: the tokens a frame adds (default all its patches; fewer
        with token selection, while the frame still spans ``num_patches`` positions)."""
        vla, text = model.config, model.config.text_config
        frame_tokens = frame_tokens or vla.num_patches
        strategy = config.build_strategy(gate)
        history = config.budget_tokens if strategy.bounded else 0  # unbounded strategies grow as they go
        limit = config.position_limit or text.max_position_embeddings
        tick_tokens = vla.num_patches + tick_text_tokens
        if strategy.bounded and 1 + history + tick_tokens > limit:
            raise ValueError(
                f"position_limit={limit} cannot hold BOS, the history budget ({history} tokens) and one tick "
                f"({tick_tokens} tokens): use >= {1 + history + tick_tokens}"
            )
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
        return cls(config, storage, rotator, frame_tokens, strategy, max_next_position=limit - tick_tokens)

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
        return self.max_position + 1

    @property
    def max_position(self) -> int:
        return int(self.storage.positions[: self.length].max()) if self.length else -1

    def token_slots(self) -> torch.Tensor:
        """The storage slot of each history token in temporal order: BOS (slot 0), then every chunk's tokens."""
        return torch.cat([torch.zeros(1, dtype=torch.long), *(c.slots for c in self.chunks)])

    def reserve_positions(self, n: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Positions for ``n`` tokens about to be appended (recorded before the forward writes them): the next
        ``n`` positions, or the next position plus ``offsets`` (increasing; a frame with tokens left out)."""
        positions = self.next_position + (torch.arange(n) if offsets is None else offsets)
        self.storage.ensure_capacity(self.length + n)
        self.storage.set_positions(self.length, positions)
        return positions

    def add_frame(self, end: int | None = None) -> list[Chunk]:
        """The ``frame_tokens`` tokens just written, up to ``end`` (default: the last), become this tick's chunks."""
        start = (self.length if end is None else end) - self.frame_tokens
        n = self.frame_tokens // self.chunk_len
        layers = self.strategy.descriptor_layers
        descriptors = self.chunk_descriptors(start, n, layers) if layers else [None] * n
        slots = torch.arange(start, start + self.frame_tokens).view(n, self.chunk_len)
        new = [
            Chunk(self.next_chunk_id + i, self.tick, self.chunk_len, descriptor=d, slots=slots[i])
            for i, d in enumerate(descriptors)
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
        """Attention mass this tick's queries put on each storage slot."""
        self.strategy.observe_attention(mass.float().cpu())

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
        """Summarize and drop in place: a summary takes its chunk's first slots, then the storage is relaid."""
        self.rebuilds += 1
        summarized = [c for c in self.chunks if decisions.get(c.id) is Decision.SUMMARIZE]
        if summarized:
            storage, s = self.storage, self.summary_tokens
            tokens, positions = summarize(storage, torch.stack([c.slots for c in summarized]), s, self.rotator)
            for chunk in summarized:
                chunk.slots, chunk.length, chunk.summarized = chunk.slots[:s], s, True
            slots = torch.cat([c.slots for c in summarized])
            storage.buffer.index_copy_(4, slots.to(storage.device), tokens)
            storage.positions[slots] = positions
        self.chunks = [c for c in self.chunks if decisions.get(c.id) is not Decision.DROP]
        self._relayout()

    def _relayout(self) -> None:
        """The kept tokens into slots ``0 .. n-1`` and their keys at their target positions.

        A kept token in a slot at or past ``n`` moves into a freed slot below it; no other token moves.
        Positions stay as encoded (gaps where chunks went), or gap-free with ``rope_compact`` at the offset
        most tokens already have; past ``max_next_position`` they restart at 0. Keys are re-rotated only
        where the position changes.
        """
        slots = self.token_slots()
        n = len(slots)
        old = self.storage.positions[slots]
        rank = torch.arange(n)
        target = torch.mode(old - rank).values + rank if self.config.rope_compact else old
        if self.max_next_position is not None and int(target[-1]) >= self.max_next_position:
            target = rank
            self.compactions += 1
            logger.debug("cache positions compacted: the newest was %d, now %d", int(old[-1]), n - 1)

        inside = slots < n
        occupied = torch.zeros(n, dtype=torch.bool)
        occupied[slots[inside]] = True
        dest = slots.clone()
        dest[~inside] = torch.nonzero(~occupied).flatten()  # the freed slots, lowest first
        if not bool(inside.all()):
            self.storage.move(slots[~inside], dest[~inside])
        delta = target - old
        rotate = delta != 0
        if bool(rotate.any()):
            self.storage.rotate_keys(dest[rotate], delta[rotate], self.rotator)
        start = 1
        for chunk in self.chunks:
            chunk.slots = dest[start : start + chunk.length]
            start += chunk.length
        self.storage.truncate(n)
