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
from typing import Any

import numpy as np

from ..accelerators.config import split_row

EXPERT = "expert"


@dataclass(frozen=True)
class EvalSetup:
    task: str
    checkpoint: str
    unnorm_key: str
    strategies: tuple[str, ...]
    budgets_frames: tuple[int, ...]  # history budgets of the bounded strategies, one row per budget
    recent_chunks: int
    image_size: int
    max_steps: int
    strip_seeds: int = 0  # keep the frames of seeds below this one for image strips
    gate_checkpoint: str = ""  # for `gated`; empty = a seeded, untrained gate
    rope_compact: bool = False
    agreement: bool = False  # also run `full` on each episode's frames and count identical action tokens
    # more gates compared in the same run: (name, checkpoint, ((option, value), ...)) -> rows `gated:<name>`
    # after `gated`; the options override the gated strategy's (e.g. summary_threshold = keep_threshold: no summaries)
    extra_gates: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()
    keep_tokens: int = 0  # patch tokens per frame of the `<strategy>+select` rows; 0 = half the frame's
    prune_layers: int = 1  # LLM layers the `+prune` rows drop, by the calibration in layer_importance
    layer_importance: str = ""

    @classmethod
    def from_record(cls, record: dict) -> EvalSetup:
        """The setup a results JSON recorded (its lists back to tuples)."""
        recorded = record.get("extra_gates", ())  # runs before per-gate options recorded (name, path) pairs
        gates = tuple((g[0], g[1], tuple(map(tuple, g[2] if len(g) > 2 else ()))) for g in recorded)
        lists = {k: tuple(v) for k, v in record.items() if isinstance(v, list) and k != "extra_gates"}
        return cls(**(record | lists | {"extra_gates": gates}))

    def series(self) -> list[str]:
        """The strategies, each extra gate as its own series `gated:<name>` right after `gated`."""
        extra = [f"gated:{name}" for name, _, _ in self.extra_gates]
        out = []
        for name in self.strategies:
            out += [name, *extra] if name == "gated" else [name]
        return out if "gated" in self.strategies else out + extra

    def rows(self) -> list[tuple[str, str, int]]:
        """(label, series, budget in frames; 0 = unbounded) of every row, in order."""
        from ..cache.strategies import STRATEGIES

        rows = []
        for name in self.series():
            if name == EXPERT or not STRATEGIES[strategy_of(name)].bounded:
                rows.append((name, name, 0))
            else:
                many = len(self.budgets_frames) > 1
                rows += [(f"{name}@{b}" if many else name, name, b) for b in self.budgets_frames]
        return rows

    def cache_options(self, series: str) -> dict[str, Any]:
        """The cache strategy options of a row's series: its gate checkpoint and that gate's option overrides."""
        _, _, gate = split_row(series)[0].partition(":")
        if not gate:
            return {"gate_checkpoint": self.gate_checkpoint}
        checkpoint, options = {name: (path, opts) for name, path, opts in self.extra_gates}[gate]
        return {"gate_checkpoint": checkpoint, **dict(options)}


def strategy_of(series: str) -> str:
    """The cache strategy of a row's series (`gated:<name>` is `gated` with another gate; `+select`, `+prune`
    add accelerators)."""
    return split_row(series)[0].partition(":")[0]


@dataclass
class EpisodeOutcome:
    strategy: str
    seed: int
    success: bool
    ticks: int
    cue_side: int
    cue_step: int
    wall_s: float
    agreement: float | None = None  # share of ticks whose 7 action tokens equal full's on the same frames
    tick_ms: list[float] = field(default_factory=list, repr=False)  # the policy's tick latency, each tick
    reused_share: float = 0.0  # mean share of the frames' token-layers taken from the previous frame (+reuse)
    summaries: float = 0.0  # mean summarized chunks in the cache per tick (gated keep/summarize/drop)
    frames: np.ndarray | None = field(default=None, repr=False)

    def record(self) -> dict:
        summarized_elsewhere = ("strategy", "frames", "tick_ms", "reused_share", "summaries")
        return {k: v for k, v in asdict(self).items() if k not in summarized_elsewhere}


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

        from ..accelerators.rows import RowAccelerators
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
        self.reference = None
        learned = [row for row in setup.rows() if row[1] != EXPERT]
        if learned:
            policy = OpenVLAPolicy.from_checkpoint(setup.checkpoint, unnorm_key=setup.unnorm_key)
            frame_tokens = policy.config.num_patches  # budgets in whole frames' tokens, with or without selection
            accelerators = RowAccelerators.for_rows(
                policy, [s for _, s, _ in learned], setup.keep_tokens, setup.prune_layers, setup.layer_importance
            )
            for label, series, budget in learned:
                config = CacheConfig(
                    strategy=strategy_of(series),
                    budget_tokens=max(1, budget) * frame_tokens,
                    recent_chunks=setup.recent_chunks,
                    rope_compact=setup.rope_compact,
                    options=setup.cache_options(series),
                )
                self.runners[label] = accelerators.runner(policy, series, config)
            if setup.agreement:
                self.reference = PolicyRunner(policy, CacheConfig(strategy="full"))

    def run(self, seed: int) -> list[EpisodeOutcome]:
        return [self._episode(label, seed) for label, _, _ in self.setup.rows()]

    def _episode(self, strategy: str, seed: int) -> EpisodeOutcome:
        from ..sim.episodes import make_expert

        t0 = time.perf_counter()
        state = self.sim.reset(seed)
        keep = seed < self.setup.strip_seeds
        frames = []
        expert = make_expert(self.setup.task, self.mapping) if strategy == EXPERT else None
        runner = self.runners.get(strategy)
        reference = self.reference if runner is not None and strategy != "full" else None
        for r in (runner, reference):
            if r is not None:
                r.reset()
        ticks, agreeing, tick_ms, reused, summaries = 0, 0, [], [], []
        while ticks < self.setup.max_steps:
            ticks += 1
            frame = self.sim.render()
            if keep:
                frames.append(frame)
            if expert is not None:
                controller = expert.act(state)
            else:
                result = runner.step(frame, self.sim.instruction)
                tick_ms.append(result.stats.latency_ms["total"])
                reused.append(result.stats.reused_share)
                summaries.append(result.stats.chunks_summarized)
                if reference is not None:
                    agreeing += bool((reference.step(frame, self.sim.instruction).token_ids == result.token_ids).all())
                controller = self.mapping.to_controller(result.action)
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
            agreeing / ticks if reference is not None else None,
            tick_ms,
            float(np.mean(reused)) if reused else 0.0,
            float(np.mean(summaries)) if summaries else 0.0,
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
    for label, strategy, budget in setup.rows():
        episodes = outcomes.get(label, [])
        n, k = len(episodes), sum(e.success for e in episodes)
        lo, hi = wilson_interval(k, n)
        agreement = [e.agreement for e in episodes if e.agreement is not None]
        tick_ms = [t for e in episodes for t in e.tick_ms]
        results[label] = {
            "strategy": strategy,
            "budget_frames": budget,
            "action_agreement_with_full": float(np.mean(agreement)) if agreement else None,
            "success_rate": k / n if n else float("nan"),
            "wilson95": [lo, hi],
            "episodes": n,
            "successes": k,
            "mean_ticks": float(np.mean([e.ticks for e in episodes])) if n else float("nan"),
            "mean_episode_s": float(np.mean([e.wall_s for e in episodes])) if n else float("nan"),
            # the policy's tick (not the simulator's), every row interleaved seed by seed on the same workers
            "tick_ms_median": float(np.median(tick_ms)) if tick_ms else None,
            "reused_share": float(np.mean([e.reused_share for e in episodes])) if n else 0.0,
            "mean_summaries": float(np.mean([e.summaries for e in episodes])) if n else 0.0,
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

    outcomes: dict[str, list[EpisodeOutcome]] = {label: [] for label, _, _ in setup.rows()}
    with tqdm(total=len(seeds), desc=f"{setup.task}: {len(outcomes)} rows", unit="seed") as bar:
        for per_seed in run_seeds(setup, seeds, workers):
            for outcome in per_seed:
                outcomes[outcome.strategy].append(outcome)
            bar.update()
            bar.set_postfix({s: f"{np.mean([e.success for e in v]):.2f}" for s, v in outcomes.items() if v})
            if on_seed is not None:
                on_seed(outcomes)
    return outcomes
