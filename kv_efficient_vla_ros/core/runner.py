"""The policy runner: one persistent KV cache per episode, one action per control tick.

Tick t sees ``[BOS] [history chunks] [frame t patches] [prompt] [7 action tokens]``: the frame and the
prompt are prefilled into the persistent cache in one forward, 7 tokens decoded, the prompt and action
tokens cut back off, and the cache's eviction strategy judges the chunks that left the recent window.
With token selection (:mod:`.accelerators.token_selection`) the frame is a chosen subset of its patches;
with token reuse (:mod:`.accelerators.token_reuse`) the patches that barely changed since the previous frame
take its keys and values in some or all layers instead of being recomputed.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .accelerators.config import TokenReuseConfig, TokenSelectionConfig
from .accelerators.token_reuse import ReusePlan, TokenReuser, prefill_reusing
from .accelerators.token_selection import TokenSelector
from .cache.attention_mass import AttentionMass
from .cache.config import CacheConfig
from .cache.gate import RecurrentGate
from .cache.manager import ChunkedCache
from .openvla.action_tokenizer import ACTION_DIM
from .openvla.generation import BEST_ACTION_BIN, decode_after, restricts_to_actions
from .policy import OpenVLAPolicy

logger = logging.getLogger(__name__)

STAGES = ("vision", "prefill", "decode", "gate", "evict", "total")


@dataclass
class StepStats:
    tick: int
    strategy: str  # the cache's eviction strategy
    tokens: int  # cached tokens after the update (BOS + history)
    history_tokens: int
    budget_tokens: int  # 0: the strategy keeps no budget (full, none)
    chunks_verbatim: int
    chunks_summarized: int
    kept: int  # decisions this tick over the chunks outside the recent window
    summarized: int
    dropped: int
    kv_bytes: int  # live cache after the update
    kv_bytes_peak: int  # largest live cache during the tick (frame + prompt + actions on top)
    kv_bytes_allocated: int
    max_position: int
    utilities: list[float] = field(default_factory=list)
    reused_share: float = 0.0  # of this frame's token-layers, taken from the previous frame (token reuse)
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class StepResult:
    action: np.ndarray  # un-normalized 7-vector
    normalized: np.ndarray  # in [-1, 1]
    token_ids: np.ndarray  # 7 vocabulary ids
    action_logits: torch.Tensor | None  # [7, n_bins]; None with official decoding (whole-vocabulary logits)
    stats: StepStats


class PolicyRunner:
    def __init__(
        self,
        policy: OpenVLAPolicy,
        cache_config: CacheConfig,
        gate: RecurrentGate | None = None,
        decoding: str = BEST_ACTION_BIN,
        token_selection: TokenSelectionConfig | None = None,
        token_reuse: TokenReuseConfig | None = None,
    ):
        self.policy = policy
        self.decoding = decoding
        self._restrict_to_actions = restricts_to_actions(decoding)
        self.model = policy.model
        num_patches, num_layers = policy.config.num_patches, policy.config.text_config.num_hidden_layers
        self.token_selection = token_selection or TokenSelectionConfig()
        self.token_selection.validate(num_patches, num_layers)
        self.selector = TokenSelector(self.token_selection, num_patches) if self.token_selection.enabled else None
        self.frame_tokens = self.token_selection.keep_tokens or num_patches  # tokens a frame adds to the cache
        self._relevance_layers = (self.token_selection.layer(num_layers),)  # where selection measures attention
        # the longest prompt the tokenizer lets through and the action tokens fit without reallocating
        text_tokens = policy.prompt_tokenizer.max_prompt_tokens + ACTION_DIM
        self.cache = ChunkedCache.from_model(self.model, cache_config, gate, text_tokens, self.frame_tokens)
        self.config = cache_config
        self.position_limit = policy.config.text_config.max_position_embeddings
        self.token_reuse = token_reuse or TokenReuseConfig()
        self.reuser = TokenReuser(self.token_reuse, policy, self.cache) if self.token_reuse.enabled else None
        self.reset()

    @property
    def tick(self) -> int:
        """The next tick's index within the episode."""
        return self.cache.tick

    def reset(self) -> None:
        """Start a new episode: empty cache, gate state cleared."""
        self.cache.reset()
        for accelerator in (self.selector, self.reuser):
            if accelerator is not None:
                accelerator.reset()
        self.instruction: str | None = None
        self._given_instruction: str | None = None  # as the caller passed it (validated once, not every tick)
        self._prompt: torch.Tensor | None = None
        self._bos: torch.Tensor | None = None
        self._warned_positions = False

    @torch.inference_mode()
    def step(self, image: np.ndarray, instruction: str) -> StepResult:
        """One control tick. Bad input raises :class:`InvalidInputError` before the cache is touched."""
        t_start = time.perf_counter()
        same = self._given_instruction is not None and instruction == self._given_instruction
        text = self.instruction if same else self.policy.prompt_tokenizer.validate(instruction)  # tokenizes
        pixels = self.policy.image_processor(image).to(self.model.device)
        if text != self.instruction:
            self.reset()
            self.instruction = text
            self._bos, self._prompt = self.policy.prompt_embeddings(text)
        self._given_instruction = instruction

        snapshot = self.cache.snapshot()
        accelerators = [a for a in (self.selector, self.reuser) if a is not None]
        states = [a.snapshot() for a in accelerators]
        try:
            return self._run_tick(pixels, t_start)
        except BaseException:
            self.cache.restore(snapshot)  # exactly as the previous tick left it, strategy and gate state included
            for accelerator, state in zip(accelerators, states, strict=True):
                accelerator.restore(state)
            raise

    def _run_tick(self, pixels: torch.Tensor, t_start: float) -> StepResult:
        latency = {}
        t0 = time.perf_counter()
        patches, offsets = self._select_tokens(self.model.embed_image(pixels))
        frame = patches if self.cache.length else torch.cat([self._bos, patches], dim=1)
        t1 = time.perf_counter()
        latency["vision"] = t1 - t0

        # Frame and prompt in one forward: the prompt attends to the frame either way, and one forward
        # over both runs each layer's matmuls once instead of twice.
        frame_end = self.cache.length + frame.shape[1]
        embeds = torch.cat([frame, self._prompt], dim=1)
        embed_positions = self.cache.reserve_positions(embeds.shape[1], offsets)[None].to(embeds.device)
        # the `attention` strategy: the mass the prompt's and the action tokens' queries put on the history
        mass = AttentionMass(self.model, frame_end) if self.cache.strategy.wants_attention else None
        first = frame.shape[1] - patches.shape[1]  # the frame's first token in embeds (after BOS on tick 0)
        hidden, plan = self._prefill(pixels, embeds, embed_positions, first, mass)
        t2 = time.perf_counter()
        latency["prefill"] = t2 - t1

        with mass.last_rows(1) if mass else nullcontext():
            decoded = decode_after(
                self.model, self.cache, hidden[:, -1], int(embed_positions[0, -1]) + 1, self._restrict_to_actions
            )
        if mass is not None:
            self.cache.observe_attention(mass.mass)
        peak_tokens = self.cache.length
        self.cache.crop(frame_end - peak_tokens)
        t3 = time.perf_counter()
        latency["decode"] = t3 - t2

        tick = self.cache.tick
        report = self.cache.end_tick()
        latency["gate"], latency["evict"] = report.gate_s, report.evict_s
        latency["total"] = time.perf_counter() - t_start

        action, normalized = self.policy.to_action(decoded.token_ids)
        stats = self._stats(tick, report, peak_tokens, latency)
        stats.reused_share = plan.share() if plan is not None else 0.0
        if stats.max_position >= self.position_limit and not self._warned_positions:
            self._warned_positions = True
            logger.warning(
                "cache positions reached %d, past the model's max_position_embeddings=%d "
                "(strategy %s, rope_compact=%s)",
                stats.max_position,
                self.position_limit,
                self.config.strategy,
                self.config.rope_compact,
            )
        logits = decoded.action_logits[0] if decoded.action_logits is not None else None
        return StepResult(action, normalized, decoded.token_ids.cpu().numpy()[0], logits, stats)

    def _prefill(
        self,
        pixels: torch.Tensor,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        first: int,
        mass: AttentionMass | None,
    ) -> tuple[torch.Tensor, ReusePlan | None]:
        """Frame and prompt into the cache (the frame's tokens from ``first`` on), with what the accelerators
        measure on the way: the prompt's attention on the frame at one layer (which patches the task needs:
        token selection and token reuse), its entropy at every layer (token reuse's per-layer shares)."""
        frame_end = self.cache.length + first + self.frame_tokens
        focus = None
        if self.reuser is not None and self.token_reuse.layer_adaptive:  # every layer scored, mass from one
            focus = AttentionMass(self.model, frame_end, entropy=True, mass_layers=self._relevance_layers)
        elif self.selector is not None or self.reuser is not None:
            focus = AttentionMass(self.model, frame_end, self._relevance_layers)
        kept = self.selector.kept if self.selector else torch.arange(self.frame_tokens)
        plan = None
        if self.reuser is not None:
            plan = self.reuser.plan(pixels, kept, positions[0, first : first + self.frame_tokens])
        with ExitStack() as hooks:
            for scorer in (mass, focus):
                if scorer is not None:
                    hooks.enter_context(scorer.last_rows(self._prompt.shape[1]))
            if plan is None:
                hidden = self.model.hidden_states(embeds, positions, self.cache)
            else:
                reuse_from = torch.full((embeds.shape[1],), plan.num_layers, dtype=torch.long)
                reuse_from[first : first + self.frame_tokens] = plan.reuse_from
                reused_kv = self.reuser.source_kv(plan, self.cache.rotator)
                hidden = prefill_reusing(self.model, embeds, positions, self.cache, reuse_from, reused_kv)
        self.cache.add_frame(frame_end)
        frame_slots = torch.arange(frame_end - self.frame_tokens, frame_end)
        if self.selector is not None:
            self.selector.observe(focus.mass[frame_slots])
        if self.reuser is not None:
            self.reuser.remember(self.cache, frame_slots, kept, focus.entropy, focus.mass[frame_slots])
        return hidden, plan

    def _select_tokens(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame's tokens for the LLM and their positions relative to the cache's next one (None: the
        next ones in order): all patches, or with token selection the chosen ones at their places in the whole
        frame, the prompt after the whole frame."""
        if self.selector is None:
            return patches, None
        kept = self.selector.select(patches[0])
        bos = 0 if self.cache.length else 1
        prompt = torch.arange(self._prompt.shape[1])
        offsets = torch.cat([torch.zeros(bos, dtype=torch.long), bos + kept, bos + patches.shape[1] + prompt])
        return patches[:, kept.to(patches.device)], offsets

    def _stats(self, tick: int, report, peak_tokens: int, latency: dict[str, float]) -> StepStats:
        storage, chunks = self.cache.storage, self.cache.chunks
        per_token = storage.bytes_per_token
        return StepStats(
            tick=tick,
            strategy=self.config.strategy,
            tokens=self.cache.length,
            history_tokens=self.cache.history_tokens,
            budget_tokens=self.config.budget_tokens if self.cache.strategy.bounded else 0,
            chunks_verbatim=sum(not c.summarized for c in chunks),
            chunks_summarized=sum(c.summarized for c in chunks),
            kept=report.kept,
            summarized=report.summarized,
            dropped=report.dropped,
            kv_bytes=self.cache.length * per_token,
            kv_bytes_peak=peak_tokens * per_token,
            kv_bytes_allocated=storage.capacity * per_token,
            max_position=self.cache.max_position,
            utilities=report.utilities,
            latency_ms={k: 1e3 * v for k, v in latency.items()},
        )
