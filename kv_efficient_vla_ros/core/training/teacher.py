"""What the gate learns from: each chunk's utility at every tick it is judged, from recorded episodes.

An episode is first played with nothing evicted (:func:`full_pass`): that gives the chunk descriptors the
gate reads, the chunks judged at each tick (older than the recent window), the action tokens the policy
chose, and the attention mass its queries put on each chunk. Two teachers turn that into targets:

- ``attention``: the mass on each candidate at the tick, scaled so the tick's most attended chunk is 1.
  Cheap, but it measures what the policy looks at *now*; the gate must decide long before the tick
  where a chunk matters.
- ``hindsight``: what evicting the chunk costs the actions *after* it is judged: with the frame and its
  neighbour (a block of ``block_frames``) evicted as they leave the window and everything else kept, how
  much less likely are the action tokens the policy chooses with its whole history (log-likelihood loss
  summed over the 7 tokens, largest over the later ticks; a frame takes the largest of its blocks).
  Removing a block rather than one frame: a cue shown on two frames survives the removal of either.
  Two versions measured first, on the training demos, did not single out the cue: keeping one old
  frame beside the window (KL, or log-likelihood gain, against the window alone) rates every early
  frame as high as the cue, because any old frame tells the policy where in the episode it is.
  Cost: one forward of the whole episode per block (:mod:`.history` masks, no replay), no gradient.
- ``cue``: 1 for the chunks of the frames that show the cue (the step the sim recorded), 0 for the rest.
  A privileged label no real task has: it measures what a gate can do when told what matters, which
  separates the teacher from the gate's inputs and the cache around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..cache.config import CacheConfig
from ..policy import OpenVLAPolicy
from ..runner import PolicyRunner
from .history import HistoryLayout, episode_hidden

TEACHERS = ("hindsight", "attention", "cue")


@dataclass
class FullPass:
    descriptors: dict[int, torch.Tensor]  # chunk id -> descriptor, as the gate reads it
    chunk_frame: dict[int, int]  # chunk id -> the tick its frame came in
    new: list[list[int]]  # per tick: chunk ids it added
    candidates: list[list[int]]  # per tick: chunk ids judged at its end (older than the recent window)
    attention: list[torch.Tensor]  # per tick: attention mass on each candidate
    token_ids: torch.Tensor  # [T, 7] the action tokens the policy chose


def full_pass(
    policy: OpenVLAPolicy, frames: list[np.ndarray], instruction: str, config: CacheConfig, layers: tuple[int, ...]
) -> FullPass:
    """Play the episode with nothing evicted, recording what the gate sees and what the teachers need."""
    history = len(frames) * policy.config.num_patches  # a budget nothing exceeds: no eviction
    keep_all = replace(
        config, strategy="attention", budget_tokens=history, options={**config.options, "attention_decay": 0.0}
    )
    runner = PolicyRunner(policy, keep_all)
    record = FullPass({}, {}, [], [], [], torch.zeros(len(frames), 7, dtype=torch.long))
    for tick, frame in enumerate(frames):
        before = {c.id for c in runner.cache.chunks}
        result = runner.step(frame, instruction)
        record.token_ids[tick] = torch.from_numpy(result.token_ids)
        chunks = runner.cache.chunks
        new = [c for c in chunks if c.id not in before]
        start = int(new[0].slots[0])  # nothing is evicted, so a tick's chunks stay side by side
        for chunk, descriptor in zip(new, runner.cache.chunk_descriptors(start, len(new), layers), strict=True):
            record.descriptors[chunk.id] = descriptor
            record.chunk_frame[chunk.id] = tick
        candidates = chunks[: max(0, len(chunks) - config.recent_chunks)]
        record.new.append([c.id for c in new])
        record.candidates.append([c.id for c in candidates])
        mass = runner.cache.strategy.mass  # rebuilt every tick
        record.attention.append(torch.tensor([mass[c.id] for c in candidates]))
    return record


def cue_targets(record: FullPass, cue_chunks: set[int]) -> list[torch.Tensor]:
    return [torch.tensor([float(c in cue_chunks) for c in candidates]) for candidates in record.candidates]


def attention_targets(record: FullPass) -> list[torch.Tensor]:
    return [m / m.max().clamp_min(1e-12) if len(m) else m for m in record.attention]


COUNTERFACTUALS = ("evict", "replace", "keep_alone")


@torch.no_grad()
def block_drops(
    policy: OpenVLAPolicy,
    frames: list[np.ndarray],
    instruction: str,
    token_ids: torch.Tensor,
    recent: int,
    block_frames: int = 2,
    counterfactual: str = "evict",
    first: int = 0,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Each block of ``block_frames`` frames from ``first`` on that leaves the recent window before the last
    tick, with ``[T, 7]``: the log-likelihood of ``token_ids`` (the actions chosen with the whole history)
    with the block minus without it, per tick and action token; 0 before the block leaves the window.

    Without it, by ``counterfactual``: ``evict``, the block hidden from the ticks after it leaves the window,
    everything else kept; ``replace``, the frame before the block shown in its place (after it, for the first
    frames), so the history keeps its length and positions and the effect is the block's content alone;
    ``keep_alone``, every old frame evicted, against the block kept alone beside the window."""
    if counterfactual not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual {counterfactual!r}: expected one of {COUNTERFACTUALS}")
    model = policy.model
    ticks = len(frames)
    prompt_ids = torch.tensor(policy.prompt_tokenizer(instruction))
    layout = HistoryLayout(ticks, model.config.num_patches, len(prompt_ids) - 1)
    pixels = torch.cat([policy.image_processor(f) for f in frames]).to(model.device)
    patches, prompt = model.embed_image(pixels), model.embed_tokens(prompt_ids.to(model.device))
    token_ids = token_ids.to(model.device)
    bins = (token_ids - model.action_ids.start)[..., None]  # index among the action rows
    leaves_window = torch.arange(ticks) + recent + 1

    def log_likelihood(drop_tick: torch.Tensor | None, seen: torch.Tensor = patches) -> torch.Tensor:  # [T, 7]
        mask = layout.additive_mask(model.dtype, drop_tick)
        hidden = episode_hidden(model, layout, seen, prompt, token_ids, mask)
        log_probs = torch.log_softmax(model.action_logits(hidden).float(), dim=-1)  # [T, 7, bins]
        return log_probs.gather(-1, bins).squeeze(-1).cpu()

    baseline = log_likelihood(leaves_window if counterfactual == "keep_alone" else None)
    for start in range(first, max(first, ticks - recent - 1)):  # a block in the window at the last tick never matters
        block = list(range(start, min(start + block_frames, ticks)))
        if counterfactual == "replace":
            seen = patches.clone()
            seen[block] = patches[start - 1] if start else patches[min(block[-1] + 1, ticks - 1)]
            drop = baseline - log_likelihood(None, seen)
        elif counterfactual == "keep_alone":
            alone = leaves_window.clone()
            alone[block] = ticks
            drop = log_likelihood(alone) - baseline
        else:
            drop_tick = torch.full((ticks,), ticks)
            drop_tick[block] = leaves_window[block]
            drop = baseline - log_likelihood(drop_tick)
        drop[: start + recent + 1] = 0
        yield block, drop


def frame_effects(
    policy: OpenVLAPolicy,
    frames: list[np.ndarray],
    instruction: str,
    token_ids: torch.Tensor,
    recent: int,
    block_frames: int = 2,
    replace: bool = False,
) -> torch.Tensor:
    """``[frames, ticks]``: how much evicting frame f (with its block; with ``replace``, showing its neighbour
    in its place) lowers the log-likelihood of ``token_ids`` summed over the 7 tokens (0 if it raises it) at
    each tick (0 before f leaves the window). A frame takes the largest effect of the blocks it belongs to."""
    effects = torch.zeros(len(frames), len(frames))
    counterfactual = "replace" if replace else "evict"
    for block, drop in block_drops(policy, frames, instruction, token_ids, recent, block_frames, counterfactual):
        loss = drop.sum(-1).clamp(min=0)
        for f in block:
            effects[f] = torch.maximum(effects[f], loss)
    return effects


def hindsight_utilities(record: FullPass, effects: torch.Tensor) -> list[torch.Tensor]:
    """Per tick, each candidate's largest effect at any later tick (nats; :func:`squash` makes it a target)."""
    ticks = effects.shape[1]
    later_max = torch.zeros_like(effects)  # later_max[f, t] = max over s > t of effects[f, s]
    for t in range(ticks - 2, -1, -1):
        later_max[:, t] = torch.maximum(later_max[:, t + 1], effects[:, t + 1])
    targets = []
    for tick, candidates in enumerate(record.candidates):
        targets.append(torch.tensor([float(later_max[record.chunk_frame[c], tick]) for c in candidates]))
    return targets


def squash(utility: torch.Tensor, scale: float) -> torch.Tensor:
    """Nats to a target in [0, 1): 0.5 at ``scale``."""
    return utility / (utility + scale)
