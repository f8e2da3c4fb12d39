"""Fitting the recurrent gate to a teacher signal computed with the full cache (``kv-vla-train-gate``).

Teacher: at every tick of recorded episodes, run with nothing evicted, the attention mass that the
prompt and action queries put on each history chunk, scaled so the tick's most-attended chunk is 1.
Student: the gate, replayed over the same ticks (descriptors in temporal order, hidden state carried),
predicts each chunk's utility; binary cross-entropy against the teacher, back-propagated through the
episode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from ..cache.config import CacheConfig
from ..cache.gate import RecurrentGate, extra_features
from ..cache.strategies import GatedStrategy, make_strategy
from ..policy import OpenVLAPolicy
from ..runner import PolicyRunner


@dataclass
class TeacherTick:
    new: torch.Tensor  # descriptors of the chunks this tick added, [n_new, D]
    candidates: list[int]  # chunk ids judged at this tick (older than the recent window)
    ages: list[int]  # in ticks
    targets: torch.Tensor  # teacher utility per candidate


def teacher_episode(
    policy: OpenVLAPolicy, frames: list[np.ndarray], instruction: str, config: CacheConfig, layers: tuple[int, ...]
) -> tuple[dict[int, torch.Tensor], list[TeacherTick]]:
    """Run the episode with nothing evicted, recording descriptors and per-tick attention mass."""
    history = len(frames) * policy.config.num_patches  # a budget nothing exceeds: no eviction
    keep_all = replace(
        config, strategy="attention", budget_tokens=history, options={**config.options, "attention_decay": 0.0}
    )
    runner = PolicyRunner(policy, keep_all)
    attention = runner.cache.strategy
    descriptors: dict[int, torch.Tensor] = {}
    ticks = []
    for tick, frame in enumerate(frames):
        before = {c.id for c in runner.cache.chunks}
        runner.step(frame, instruction)
        chunks = runner.cache.chunks
        new = [c for c in chunks if c.id not in before]
        start = runner.cache.length - sum(c.length for c in new)
        for chunk, descriptor in zip(new, runner.cache.chunk_descriptors(start, len(new), layers), strict=True):
            descriptors[chunk.id] = descriptor
        candidates = chunks[: max(0, len(chunks) - config.recent_chunks)]
        mass = torch.tensor([attention.mass[c.id] for c in candidates])
        targets = mass / mass.max().clamp_min(1e-12) if len(mass) else mass
        ticks.append(
            TeacherTick(
                new=torch.stack([descriptors[c.id] for c in new]),
                candidates=[c.id for c in candidates],
                ages=[tick - c.tick for c in candidates],
                targets=targets,
            )
        )
    return descriptors, ticks


def episode_loss(gate: RecurrentGate, descriptors: dict[int, torch.Tensor], ticks: list[TeacherTick]) -> torch.Tensor:
    gate.reset_state()
    losses = []
    for tick in ticks:
        gate.observe(tick.new)
        if not tick.candidates:
            continue
        chunk_descriptors = torch.stack([descriptors[i] for i in tick.candidates])
        extras = extra_features(tick.ages, [False] * len(tick.ages))
        predicted = gate.utilities(chunk_descriptors, extras).clamp(1e-6, 1 - 1e-6)
        losses.append(torch.nn.functional.binary_cross_entropy(predicted, tick.targets))
    return torch.stack(losses).mean()


def train(
    policy: OpenVLAPolicy,
    episodes: list[tuple[list[np.ndarray], str]],
    config: CacheConfig,
    epochs: int,
    lr: float,
    seed: int,
) -> tuple[RecurrentGate, dict]:
    torch.manual_seed(seed)
    gated: GatedStrategy = make_strategy("gated", {**config.options, "gate_checkpoint": ""})
    text = policy.config.text_config
    gate = gated.new_gate(text.num_hidden_layers, text.num_key_value_heads, policy.config.head_dim)
    gate = gate.to(policy.model.device).train()
    data = [
        teacher_episode(policy, frames, text, config, gate.config.layers)
        for frames, text in tqdm(episodes, desc="teacher (full cache)")
    ]
    optimizer = torch.optim.Adam(gate.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(epochs), desc="gate epochs"):
        total = 0.0
        for descriptors, ticks in data:
            optimizer.zero_grad()
            loss = episode_loss(gate, descriptors, ticks)
            loss.backward()
            optimizer.step()
            total += loss.item()
        history.append(total / len(data))
    gate.eval().reset_state()
    return gate, {
        "loss_first_epoch": history[0],
        "loss_last_epoch": history[-1],
        "epochs": epochs,
        "episodes": len(episodes),
    }
