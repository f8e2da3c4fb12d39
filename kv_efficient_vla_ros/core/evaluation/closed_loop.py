"""Closed-loop success in the MuJoCo Panda, in-process, for the expert and every cache strategy.

Every strategy runs the same seeds. Seeds are processed in order and each seed runs every strategy, so
an interrupted run still compares all strategies on the seeds it finished. Workers are separate
processes (each with its own simulator, GL context and model, one torch thread).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

EXPERT = "expert"


@dataclass(frozen=True)
class EvalSetup:
    task: str
    checkpoint: str
    unnorm_key: str
    strategies: tuple[str, ...]
    budget_frames: int
    recent_chunks: int
    image_size: int
    max_steps: int
    strip_seeds: int = 0  # keep the frames of seeds below this one for image strips
    gate_checkpoint: str = ""  # for `gated`; empty = a seeded, untrained gate


@dataclass
class EpisodeOutcome:
    strategy: str
    seed: int
    success: bool
    ticks: int
    cue_side: int
    cue_step: int
    wall_s: float
    frames: np.ndarray | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("strategy", "frames")}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


class _Worker:
    """One simulator and one model; runs a seed for every strategy."""

    def __init__(self, setup: EvalSetup):
        import torch

        from ..cache.config import CacheConfig
        from ..policy import OpenVLAPolicy
        from ..runner import PolicyRunner
        from ..sim.action_mapping import ActionMapping
        from ..sim.tasks import PandaTask

        torch.set_num_threads(1)
        self.setup = setup
        self.sim = PandaTask(setup.task, 0, image_size=setup.image_size, horizon=setup.max_steps + 5)
        self.mapping = ActionMapping()
        self.runners = {}
        learned = [s for s in setup.strategies if s != EXPERT]
        if learned:
            policy = OpenVLAPolicy.from_checkpoint(setup.checkpoint, unnorm_key=setup.unnorm_key)
            frame_tokens = policy.config.num_patches
            for name in learned:
                config = CacheConfig(
                    strategy=name,
                    budget_tokens=setup.budget_frames * frame_tokens,
                    recent_chunks=setup.recent_chunks,
                    options={"gate_checkpoint": setup.gate_checkpoint},
                )
                self.runners[name] = PolicyRunner(policy, config)

    def run(self, seed: int) -> list[EpisodeOutcome]:
        return [self._episode(strategy, seed) for strategy in self.setup.strategies]

    def _episode(self, strategy: str, seed: int) -> EpisodeOutcome:
        from ..sim.episodes import make_expert

        t0 = time.perf_counter()
        state = self.sim.reset(seed)
        keep = seed < self.setup.strip_seeds
        frames = []
        expert = make_expert(self.setup.task, self.mapping) if strategy == EXPERT else None
        runner = self.runners.get(strategy)
        if runner is not None:
            runner.reset()
        ticks = 0
        while ticks < self.setup.max_steps:
            ticks += 1
            frame = self.sim.render()
            if keep:
                frames.append(frame)
            if expert is not None:
                controller = expert.act(state)
            else:
                controller = self.mapping.to_controller(runner.step(frame, self.sim.instruction).action)
            state = self.sim.step(controller)
            if self.sim.decided():
                break
        return EpisodeOutcome(
            strategy,
            seed,
            self.sim.success(),
            ticks,
            state.cue_side,
            state.cue_step,
            time.perf_counter() - t0,
            np.stack(frames) if keep else None,
        )


_worker: _Worker | None = None


def _init(setup: EvalSetup) -> None:
    global _worker
    _worker = _Worker(setup)


def _run(seed: int) -> list[EpisodeOutcome]:
    assert _worker is not None
    return _worker.run(seed)


def run_seeds(setup: EvalSetup, seeds: list[int], workers: int = 1) -> Iterator[list[EpisodeOutcome]]:
    """Yield each seed's outcomes (one per strategy), in seed order."""
    if workers <= 1:
        _init(setup)
        for seed in seeds:
            yield _run(seed)
        return
    # spawn: each worker makes its own GL context and torch state (fork would share them)
    context = mp.get_context("spawn")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with context.Pool(workers, initializer=_init, initargs=(setup,)) as pool:
        yield from pool.imap(_run, seeds)


def summarize(setup: EvalSetup, outcomes: dict[str, list[EpisodeOutcome]]) -> dict:
    """Per strategy: success rate, Wilson 95 % interval, episodes, mean ticks, per-episode records."""
    results = {}
    for strategy in setup.strategies:
        episodes = outcomes.get(strategy, [])
        n, k = len(episodes), sum(e.success for e in episodes)
        lo, hi = wilson_interval(k, n)
        results[strategy] = {
            "success_rate": k / n if n else float("nan"),
            "wilson95": [lo, hi],
            "episodes": n,
            "successes": k,
            "mean_ticks": float(np.mean([e.ticks for e in episodes])) if n else float("nan"),
            "mean_episode_s": float(np.mean([e.wall_s for e in episodes])) if n else float("nan"),
            "per_episode": [e.record() for e in episodes],
        }
    return results


def evaluate(
    setup: EvalSetup,
    seeds: list[int],
    workers: int = 1,
    on_seed: Callable[[dict[str, list[EpisodeOutcome]]], None] | None = None,
) -> dict[str, list[EpisodeOutcome]]:
    from tqdm import tqdm

    outcomes: dict[str, list[EpisodeOutcome]] = {s: [] for s in setup.strategies}
    with tqdm(total=len(seeds), desc=f"{setup.task}: {len(setup.strategies)} strategies", unit="seed") as bar:
        for per_seed in run_seeds(setup, seeds, workers):
            for outcome in per_seed:
                outcomes[outcome.strategy].append(outcome)
            bar.update()
            bar.set_postfix({s: f"{np.mean([e.success for e in v]):.2f}" for s, v in outcomes.items() if v})
            if on_seed is not None:
                on_seed(outcomes)
    return outcomes
