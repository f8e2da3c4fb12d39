"""Fitting the recurrent gate to a teacher's utilities over recorded episodes (``kv-vla-train-gate``).

The gate is replayed over each episode as the cache drives it at inference: new chunks' descriptors in
temporal order (hidden state carried), then a utility for every candidate of the tick; binary
cross-entropy against the teacher's targets (:mod:`.teacher`), back-propagated through the episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from ..cache.config import CacheConfig
from ..cache.gate import RecurrentGate, extra_features
from ..cache.strategies import GatedStrategy, make_strategy
from ..policy import OpenVLAPolicy
from .teacher import attention_targets, cue_targets, frame_effects, full_pass, hindsight_utilities, squash


@dataclass
class TeacherTick:
    new: torch.Tensor  # descriptors of the chunks this tick added, [n_new, D]
    candidates: list[int]  # chunk ids judged at this tick (older than the recent window)
    ages: list[int]  # in ticks
    targets: torch.Tensor  # teacher utility per candidate, in [0, 1]


@dataclass
class TeacherEpisode:
    seed: int
    descriptors: dict[int, torch.Tensor]
    ticks: list[TeacherTick]
    cue_chunks: set[int] = field(default_factory=set)  # chunks of frames showing the cue (delayed_cue)


@dataclass(frozen=True)
class RecordedEpisode:
    seed: int
    frames: list[np.ndarray]
    instruction: str
    cue_step: int = -1  # first step the cue is visible on, -1 = none


def teacher_episodes(
    policy: OpenVLAPolicy,
    episodes: list[RecordedEpisode],
    config: CacheConfig,
    layers: tuple[int, ...],
    teacher: str,
    hindsight_replace: bool = False,
) -> tuple[list[TeacherEpisode], dict]:
    """Utilities of ``teacher`` for every episode (hindsight: in nats, see :func:`with_targets`), and their cost.
    ``hindsight_replace``: the hindsight counterfactual replaces a block by its neighbour instead of evicting it."""
    out, cost = [], {"full_pass_s": 0.0, "hindsight_s": 0.0, "episodes": len(episodes), "ticks": 0}
    for episode in tqdm(episodes, desc=f"{teacher} teacher"):
        t0 = time.perf_counter()
        record = full_pass(policy, episode.frames, episode.instruction, config, layers)
        t1 = time.perf_counter()
        cue = {c for c, f in record.chunk_frame.items() if episode.cue_step >= 0 and f - episode.cue_step in (0, 1)}
        if teacher == "hindsight":
            effects = frame_effects(
                policy,
                episode.frames,
                episode.instruction,
                record.token_ids,
                config.recent_chunks,
                replace=hindsight_replace,
            )
            targets = hindsight_utilities(record, effects)
        elif teacher == "cue":
            if episode.cue_step < 0:
                raise ValueError(f"teacher 'cue' needs episodes with a cue: seed {episode.seed} has none")
            targets = cue_targets(record, cue)
        else:
            targets = attention_targets(record)
        cost["full_pass_s"] += t1 - t0
        cost["hindsight_s"] += time.perf_counter() - t1
        cost["ticks"] += len(episode.frames)
        ticks = [
            TeacherTick(
                new=torch.stack([record.descriptors[i] for i in new]),
                candidates=candidates,
                ages=[tick - record.chunk_frame[i] for i in candidates],
                targets=target,
            )
            for tick, (new, candidates, target) in enumerate(zip(record.new, record.candidates, targets, strict=True))
        ]
        out.append(TeacherEpisode(episode.seed, record.descriptors, ticks, cue))
    return out, cost


def with_targets(episodes: list[TeacherEpisode], scale: float) -> list[TeacherEpisode]:
    """Hindsight utilities (nats) squashed to targets in [0, 1), 0.5 at ``scale``."""
    return [replace(e, ticks=[replace(t, targets=squash(t.targets, scale)) for t in e.ticks]) for e in episodes]


def replay_gate(gate: RecurrentGate, episode: TeacherEpisode) -> list[torch.Tensor]:
    """The gate's utilities for each tick's candidates, replayed over the episode."""
    gate.reset_state()
    utilities = []
    for tick in episode.ticks:
        gate.observe(tick.new)
        if not tick.candidates:
            utilities.append(torch.zeros(0))
            continue
        descriptors = torch.stack([episode.descriptors[i] for i in tick.candidates])
        extras = extra_features(tick.ages, [False] * len(tick.ages)).to(descriptors)
        utilities.append(gate.utilities(descriptors, extras))
    return utilities


def episode_loss(gate: RecurrentGate, episode: TeacherEpisode) -> torch.Tensor:
    losses = [
        torch.nn.functional.binary_cross_entropy(u.clamp(1e-6, 1 - 1e-6), tick.targets)
        for u, tick in zip(replay_gate(gate, episode), episode.ticks, strict=True)
        if len(u)
    ]
    return torch.stack(losses).mean()


@dataclass
class GateHistory:
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)  # keep (>= 0.5) agrees with the teacher's
    val_cue_kept: list[float] = field(default_factory=list)  # episodes whose needed cue the gate keeps


@torch.no_grad()
def evaluate_gate(gate: RecurrentGate, episodes: list[TeacherEpisode], older_slots: int) -> tuple[float, float, float]:
    """Held-out loss, keep-decision accuracy against the teacher, and the share of episodes in which, at every
    tick where the teacher rates a cue chunk worth keeping (>= 0.5), the gate keeps one of them too (utility
    >= 0.5 and among the ``older_slots`` highest, what the budget lets through). Episodes where the teacher
    never rates the cue worth keeping do not count."""
    losses, agree, total, cue_kept = [], 0, 0, []
    for episode in episodes:
        utilities = replay_gate(gate, episode)
        losses.append(float(episode_loss(gate, episode)))
        survived, needed = True, False
        for u, tick in zip(utilities, episode.ticks, strict=True):
            if not len(u):
                continue
            agree += int(((u >= 0.5) == (tick.targets >= 0.5)).sum())
            total += len(u)
            cue = [i for i, c in enumerate(tick.candidates) if c in episode.cue_chunks and tick.targets[i] >= 0.5]
            if cue:
                needed = True
                top = set(torch.argsort(u, descending=True)[:older_slots].tolist())
                survived &= any(i in top and u[i] >= 0.5 for i in cue)
        if needed:
            cue_kept.append(float(survived))
    return float(np.mean(losses)), agree / max(1, total), float(np.mean(cue_kept)) if cue_kept else float("nan")


def train(
    train_set: list[TeacherEpisode],
    val_set: list[TeacherEpisode],
    gate: RecurrentGate,
    epochs: int,
    lr: float,
    older_slots: int,
    seed: int,
) -> tuple[RecurrentGate, GateHistory]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gate.train()
    optimizer = torch.optim.Adam(gate.parameters(), lr=lr)
    history = GateHistory()
    for epoch in tqdm(range(epochs), desc="gate epochs"):
        total = 0.0
        for index in rng.permutation(len(train_set)):
            optimizer.zero_grad()
            loss = episode_loss(gate, train_set[index])
            loss.backward()
            optimizer.step()
            total += loss.item()
        gate.eval()
        val_loss, val_acc, cue_kept = evaluate_gate(gate, val_set, older_slots)
        gate.train()
        history.epoch.append(epoch)
        history.train_loss.append(total / len(train_set))
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        history.val_cue_kept.append(cue_kept)
    gate.eval().reset_state()
    return gate, history


def new_gate(policy: OpenVLAPolicy, config: CacheConfig) -> RecurrentGate:
    """An untrained gate of the type and size ``config`` names, for ``policy``'s dimensions."""
    gated: GatedStrategy = make_strategy("gated", {**config.options, "gate_checkpoint": ""})
    text = policy.config.text_config
    gate = gated.new_gate(text.num_hidden_layers, text.num_key_value_heads, policy.config.head_dim)
    return gate.to(policy.model.device)
