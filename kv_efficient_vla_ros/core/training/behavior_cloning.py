"""Behaviour cloning of an OpenVLA-format policy on expert episodes, with the history the runner shows.

Each optimizer step is one episode in one forward (:mod:`.history`): cross-entropy on the 7 action
tokens of every tick, the official 256 bins, targets normalized with q01/q99 computed from the demos
and written into the checkpoint's ``norm_stats`` under the task's key. The model starts from a seeded
tiny OpenVLA-format model and is saved in the official layout, so it loads like openvla-7b does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..openvla.action_tokenizer import ACTION_DIM, ActionTokenizer
from ..openvla.checkpoint import load_model
from ..openvla.modeling import OpenVLAModel
from ..openvla.processor import ImageProcessor, PromptTokenizer
from ..openvla.tiny import TinySpec, build_tiny_model, save_checkpoint
from ..sim.episodes import Episode
from .history import HistoryLayout, episode_hidden

logger = logging.getLogger(__name__)

# The trained memory policy: the embedded tiny architecture at 112 px (64 patches per frame, so a
# 30-frame episode is ~3,000 tokens and trains in about a second on 2 cores) with a 2,048-token text
# vocabulary (the output layer and embedding of a 32,000-token one would be 2/3 of a 30 MB checkpoint).
MEMORY_POLICY_SPEC = TinySpec(
    vision_backbone_id="tiny-dinosiglip-112px", text_vocab_size=2048, initializer_range=0.02, seed=0
)
GRIPPER_DIM = 6  # passes through un-normalization (mask false), as in OpenVLA's datasets


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    validation_fraction: float = 0.1
    seed: int = 0
    max_minutes: float = 57.0  # stop early (and still save) so a run fits its time budget
    # Weight of the action tokens at the ticks the remembered cue decides (moving to the cued side): about
    # 4 of 25 ticks, so with weight 1 the memory is ~2 % of the loss and learned last, if at all.
    memory_tick_weight: float = 10.0
    # In closed loop the first decision tick decides the episode: from the next one on, the newest frames show
    # the arm moving to a side and a policy can copy that motion without remembering the cue, so the later
    # ticks are learned whether the memory is or not (tools/probe_decision_ticks.py). When > 0, the first
    # decision tick's tokens get this weight wherever the history still shows a cue frame (else 1: nothing
    # there tells the side).
    first_decision_weight: float = 0.0
    # Gapped histories (what a bounded cache shows): this fraction of the episodes is trained with the
    # newest 1-2 frames and each older frame kept with a probability drawn from [0, gap_keep_max), the
    # rest evicted as they leave the window. Without them the policy has only seen whole histories and
    # hovers, never deciding, when a strategy leaves gaps.
    gapped_fraction: float = 0.5
    gap_keep_max: float = 0.5
    # Sparse histories (what a gate leaves at a small budget): this share of the gapped episodes keeps only
    # 0..sparse_max_old older frames beside the newest 1-2, the cue frames among them half the time (the
    # demos record the cue step). Random gaps keep ~a quarter of the old frames, so a history of the cue
    # and the newest frames alone is rare there, and a policy trained only on them mostly ignores a cue
    # that a gate kept (README, issue 11).
    sparse_fraction: float = 0.0
    sparse_max_old: int = 4
    # Frames of fewer tokens (what EfficientVLA token selection gives the LLM): this fraction of the episodes
    # is trained with each frame keeping a random K of its patches, K drawn per episode from
    # [token_keep_min, num_patches). A policy that has only seen whole frames acts at chance on them.
    token_dropout_fraction: float = 0.0
    token_keep_min: int = 16
    threads: int = 0  # 0 = torch's default


@dataclass
class TrainHistory:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    token_accuracy: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_token_accuracy: list[float] = field(default_factory=list)
    val_side_accuracy: list[float] = field(default_factory=list)
    val_cue_only_side_accuracy: list[float] = field(default_factory=list)  # history: the cue frames + 2 newest
    val_first_decision_side_accuracy: list[float] = field(default_factory=list)  # whole history, first tick only


def action_norm_stats(actions: np.ndarray, trajectories: int) -> dict:
    """OpenVLA's ``norm_stats`` entry for demo actions ``[N, 7]``: per-dimension q01/q99, gripper unmasked."""
    actions = np.asarray(actions, dtype=np.float64)
    mask = [True] * ACTION_DIM
    mask[GRIPPER_DIM] = False
    return {
        "action": {
            "q01": np.quantile(actions, 0.01, axis=0).tolist(),
            "q99": np.quantile(actions, 0.99, axis=0).tolist(),
            "mean": actions.mean(axis=0).tolist(),
            "std": actions.std(axis=0).tolist(),
            "mask": mask,
        },
        "num_transitions": len(actions),
        "num_trajectories": trajectories,
    }


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """The official normalization: ``2 (a - q01) / (q99 - q01) - 1`` clipped to [-1, 1] where masked."""
    q01, q99 = np.asarray(stats["action"]["q01"]), np.asarray(stats["action"]["q99"])
    mask = np.asarray(stats["action"]["mask"], dtype=bool)
    scaled = np.clip(2.0 * (actions - q01) / (q99 - q01 + 1e-8) - 1.0, -1.0, 1.0)
    return np.where(mask, scaled, np.clip(actions, -1.0, 1.0))


def random_evictions(ticks: int, rng: np.random.Generator, keep_max: float) -> torch.Tensor:
    """``drop_tick`` per frame of a random bounded history: the newest 1 or 2 frames always visible, each
    older frame kept to the end with probability ``U(0, keep_max)``, else evicted as it leaves the window."""
    recent, keep = int(rng.integers(1, 3)), rng.uniform(0.0, keep_max)
    kept = rng.random(ticks) < keep
    return torch.from_numpy(np.where(kept, ticks, np.arange(ticks) + recent + 1))


def sparse_evictions(ticks: int, rng: np.random.Generator, cue_step: int, max_old: int) -> torch.Tensor:
    """``drop_tick`` of a sparse bounded history: the newest 1 or 2 frames, and 0 to ``max_old`` older frames
    kept to the end, the cue frames (as many as fit) among them with probability 1/2 when there is a cue."""
    recent, n_old = int(rng.integers(1, 3)), int(rng.integers(0, max_old + 1))
    old = np.arange(max(0, ticks - recent - 1))  # frames that leave the window before the last tick
    kept = np.zeros(ticks, dtype=bool)
    if cue_step >= 0 and rng.random() < 0.5:
        kept[[f for f in (cue_step, cue_step + 1) if f < len(old)][:n_old]] = True
    others = old[~kept[old]]
    kept[rng.choice(others, size=min(n_old - int(kept.sum()), len(others)), replace=False)] = True
    return torch.from_numpy(np.where(kept, ticks, np.arange(ticks) + recent + 1))


def cue_only_evictions(ticks: int, cue_step: int, recent: int = 2) -> torch.Tensor:
    """``drop_tick`` of the history an ideal gate keeps: the cue frames and the ``recent`` newest."""
    frames = np.arange(ticks)
    cue = (frames == cue_step) | (frames == cue_step + 1)
    return torch.from_numpy(np.where(cue, ticks, frames + recent + 1))


def random_token_dropout(ticks: int, patches: int, rng: np.random.Generator, keep_min: int) -> torch.Tensor:
    """``[ticks, patches]`` bool, True where a patch is dropped: every frame keeps a random K of its patches,
    one K per episode from ``[keep_min, patches)`` (as a fixed ``keep_tokens`` does at inference)."""
    keep = int(rng.integers(min(keep_min, patches - 1), patches))
    ranks = np.argsort(rng.random((ticks, patches)), axis=1)
    return torch.from_numpy(ranks >= keep)


@dataclass
class EpisodeTensors:
    pixels: torch.Tensor  # [T, C, S, S]
    action_ids: torch.Tensor  # [T, 7]
    decision_ticks: torch.Tensor  # ticks after the cue that choose a side (delayed_cue), for the side metric
    cue_step: int


class BehaviorCloning:
    """Holds the model, its processors and the demos; :meth:`train` runs the loop."""

    def __init__(
        self,
        model: OpenVLAModel,
        prompt_tokenizer: PromptTokenizer,
        episodes: list[Episode],
        norm_key: str,
        config: TrainConfig,
    ):
        self.model, self.config, self.norm_key = model, config, norm_key
        self.image_processor = ImageProcessor(model.config.vision_specs, model.config.image_resize_strategy)
        self.action_tokenizer = ActionTokenizer(model.config.text_vocab_size, model.config.n_action_bins)
        instructions = {e.instruction for e in episodes}
        if len(instructions) != 1:
            raise ValueError(f"expected one task's episodes, got instructions {sorted(instructions)}")
        self.prompt_ids = torch.tensor(prompt_tokenizer(instructions.pop()))
        self.norm_stats = action_norm_stats(np.concatenate([e.actions for e in episodes]), len(episodes))
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(episodes))
        n_val = max(1, round(config.validation_fraction * len(episodes)))
        self.val = [episodes[i] for i in sorted(order[:n_val])]
        self.train_set = [episodes[i] for i in sorted(order[n_val:])]
        self.rng = rng
        self._masks: dict[int, tuple[HistoryLayout, torch.Tensor]] = {}

    def tensors(self, episode: Episode) -> EpisodeTensors:
        pixels = torch.cat([self.image_processor(frame) for frame in episode.frames])
        normalized = normalize_actions(episode.actions, self.norm_stats)
        ids = torch.from_numpy(self.action_tokenizer.normalized_to_token_ids(normalized))
        # ticks after the cue whose expert action moves toward the cued side: the remembered cue decides them
        dy, after_cue = episode.actions[:, 1], np.arange(len(episode.actions)) > episode.cue_step + 1
        decision = torch.from_numpy(np.nonzero(after_cue & (dy * episode.cue_side > 0.02))[0])
        return EpisodeTensors(pixels, ids, decision, episode.cue_step)

    def _layout(self, ticks: int) -> tuple[HistoryLayout, torch.Tensor]:
        if ticks not in self._masks:
            layout = HistoryLayout(ticks, self.model.config.num_patches, len(self.prompt_ids) - 1)
            self._masks[ticks] = (layout, layout.additive_mask())
        return self._masks[ticks]

    def logits(
        self, data: EpisodeTensors, drop_tick: torch.Tensor | None = None, dropped: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[T, 7, vocab]`` logits of each tick's action tokens: the whole history, gapped by ``drop_tick``,
        frames missing the ``dropped`` patches (see :meth:`HistoryLayout.visible`)."""
        layout, mask = self._layout(len(data.pixels))
        if drop_tick is not None or dropped is not None:
            mask = layout.additive_mask(drop_tick=drop_tick, dropped=dropped)
        patches = self.model.embed_image(data.pixels)
        prompt = self.model.embed_tokens(self.prompt_ids)
        hidden = episode_hidden(self.model, layout, patches, prompt, data.action_ids, mask, dropped)
        return self.model.vocab_logits(hidden)

    def loss(
        self, data: EpisodeTensors, drop_tick: torch.Tensor | None = None, dropped: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-weighted cross-entropy (weights normalized to mean 1) and the predicted tokens ``[T, 7]``."""
        logits = self.logits(data, drop_tick, dropped)
        per_token = F.cross_entropy(logits.flatten(0, 1), data.action_ids.flatten(), reduction="none")
        weights = self.token_weights(data, drop_tick).flatten()
        loss = (weights * per_token).sum() / weights.sum()
        return loss, logits.argmax(-1)

    def token_weights(self, data: EpisodeTensors, drop_tick: torch.Tensor | None = None) -> torch.Tensor:
        """``[T, 7]`` loss weight of each action token: 1, ``memory_tick_weight`` at the decision ticks, and
        ``first_decision_weight`` (when set) at the first of them if a cue frame is still in the history."""
        weights = torch.ones(data.action_ids.shape)
        weights[data.decision_ticks] = self.config.memory_tick_weight
        if self.config.first_decision_weight and len(data.decision_ticks):
            first = int(data.decision_ticks[0])
            cue_frames = [f for f in (data.cue_step, data.cue_step + 1) if 0 <= f <= first]
            seen = drop_tick is None or any(first < int(drop_tick[f]) for f in cue_frames)
            weights[first] = self.config.first_decision_weight if seen else 1.0
        return weights

    @torch.no_grad()
    def validate(self) -> tuple[float, float, float, float, float]:
        """Mean loss, token accuracy, and accuracy of the side (dy) token's sign at the decision ticks, with the
        whole history, with only the cue frames and the 2 newest kept, and at the first decision tick alone."""
        self.model.eval()
        losses, correct, sides, cue_only_sides, first_sides = [], [], [], [], []
        center = self.action_tokenizer.text_vocab_size - self.action_tokenizer.n_bins // 2

        def side_accuracy(predicted: torch.Tensor, data: EpisodeTensors, ticks: slice = slice(None)) -> float:
            decision = data.decision_ticks[ticks]
            side, target = predicted[decision, 1], data.action_ids[decision, 1]
            return ((side < center) == (target < center)).float().mean().item()

        for episode in self.val:
            data = self.tensors(episode)
            loss, predicted = self.loss(data)
            losses.append(float(loss))
            correct.append((predicted == data.action_ids).float().mean().item())
            if len(data.decision_ticks):
                sides.append(side_accuracy(predicted, data))
                first_sides.append(side_accuracy(predicted, data, slice(0, 1)))
                _, gapped = self.loss(data, cue_only_evictions(len(data.pixels), data.cue_step))
                cue_only_sides.append(side_accuracy(gapped, data))
        self.model.train()

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        return mean(losses), mean(correct), mean(sides), mean(cue_only_sides), mean(first_sides)

    def train(self, on_validate: Callable[[TrainHistory], None] | None = None) -> TrainHistory:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.epochs * len(self.train_set)

        def schedule(step: int) -> float:  # linear warmup, cosine decay to 10 %
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        history, start, step = TrainHistory(), time.monotonic(), 0
        self.model.train()
        bar = tqdm(total=total, desc="behaviour cloning", unit="episode")
        for epoch in range(cfg.epochs):
            for index in self.rng.permutation(len(self.train_set)):
                data = self.tensors(self.train_set[index])
                gapped = self.rng.random() < cfg.gapped_fraction
                drop_tick = None
                if gapped and cfg.sparse_fraction and self.rng.random() < cfg.sparse_fraction:
                    drop_tick = sparse_evictions(len(data.pixels), self.rng, data.cue_step, cfg.sparse_max_old)
                elif gapped:
                    drop_tick = random_evictions(len(data.pixels), self.rng, cfg.gap_keep_max)
                dropped = None
                if cfg.token_dropout_fraction and self.rng.random() < cfg.token_dropout_fraction:
                    patches = self.model.config.num_patches
                    dropped = random_token_dropout(len(data.pixels), patches, self.rng, cfg.token_keep_min)
                loss, predicted = self.loss(data, drop_tick, dropped)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                history.step.append(step)
                history.loss.append(loss.item())
                history.token_accuracy.append((predicted == data.action_ids).float().mean().item())
                step += 1
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(history.loss[-50:]):.3f}")
                if time.monotonic() - start > 60 * cfg.max_minutes:
                    break
            val_loss, val_acc, val_side, val_cue_side, val_first_side = self.validate()
            history.val_step.append(step)
            history.val_loss.append(val_loss)
            history.val_token_accuracy.append(val_acc)
            history.val_side_accuracy.append(val_side)
            history.val_cue_only_side_accuracy.append(val_cue_side)
            history.val_first_decision_side_accuracy.append(val_first_side)
            logger.info(
                "epoch %d: val loss %.3f, token acc %.3f, side acc %.3f (cue frames only %.3f, first tick %.3f)",
                epoch,
                val_loss,
                val_acc,
                val_side,
                val_cue_side,
                val_first_side,
            )
            if on_validate is not None:
                on_validate(history)
            if time.monotonic() - start > 60 * cfg.max_minutes:
                minutes = (time.monotonic() - start) / 60
                logger.warning("stopping after %.1f minutes (max_minutes=%g)", minutes, cfg.max_minutes)
                break
        bar.close()
        self.model.eval()
        return history


def train_memory_policy(
    episodes: list[Episode],
    out_dir: Path,
    norm_key: str,
    config: TrainConfig,
    spec: TinySpec = MEMORY_POLICY_SPEC,
    on_validate: Callable[[TrainHistory], None] | None = None,
    init: Path | None = None,
) -> tuple[Path, TrainHistory, dict]:
    """Train from a seeded tiny model (or from the checkpoint ``init``, to continue a run) and save it in
    the official layout; returns (dir, history, summary)."""
    if init is None:
        model, tokenizer, raw = build_tiny_model(spec)
    else:
        model = load_model(init)
        tokenizer = PromptTokenizer.from_checkpoint(init).tokenizer
        raw = json.loads((Path(init) / "config.json").read_text())
    trainer = BehaviorCloning(model, PromptTokenizer(tokenizer), episodes, norm_key, config)
    t0 = time.monotonic()
    history = trainer.train(on_validate)
    minutes = (time.monotonic() - t0) / 60
    raw["norm_stats"] = {norm_key: trainer.norm_stats}
    out = save_checkpoint(out_dir, model, tokenizer, raw)
    summary = {
        "train_minutes": round(minutes, 2),
        "steps": len(history.step),
        "train_episodes": len(trainer.train_set),
        "train_seeds": sorted(e.seed for e in trainer.train_set),
        "validation_seeds": sorted(e.seed for e in trainer.val),
        "final_val_loss": history.val_loss[-1],
        "final_val_token_accuracy": history.val_token_accuracy[-1],
        "final_val_side_accuracy": history.val_side_accuracy[-1],
        "final_val_cue_only_side_accuracy": history.val_cue_only_side_accuracy[-1],
        "final_val_first_decision_side_accuracy": history.val_first_decision_side_accuracy[-1],
        "config": asdict(config),
        "norm_key": norm_key,
        "init": str(init) if init else None,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "training.json").write_text(json.dumps({"summary": summary, "history": asdict(history)}, indent=1) + "\n")
    return out, history, summary
