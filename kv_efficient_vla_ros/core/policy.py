"""Single-frame OpenVLA inference: one camera frame + instruction -> one 7-D robot action."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from .openvla.action_tokenizer import ActionStats, ActionTokenizer
from .openvla.checkpoint import load_model
from .openvla.generation import greedy_action_tokens
from .openvla.modeling import OpenVLAModel
from .openvla.processor import ImageProcessor, PromptTokenizer, check_tokenizer_fits


@dataclass
class PolicyOutput:
    action: np.ndarray  # un-normalized 7-vector for the robot
    normalized: np.ndarray  # bin centers in [-1, 1]
    token_ids: np.ndarray  # the 7 decoded vocabulary ids
    latency_s: dict[str, float] = field(default_factory=dict)  # per stage


class OpenVLAPolicy:
    """The model with its processor and action tokenizer, for stock single-frame inference."""

    def __init__(self, model: OpenVLAModel, prompt_tokenizer: PromptTokenizer, action_stats: ActionStats):
        self.model = model
        self.config = model.config
        self.image_processor = ImageProcessor(self.config.vision_specs, self.config.image_resize_strategy)
        self.prompt_tokenizer = prompt_tokenizer
        self.action_tokenizer = ActionTokenizer(self.config.text_vocab_size, self.config.n_action_bins)
        self.action_stats = action_stats

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | Path,
        unnorm_key: str | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_instruction_tokens: int = 64,
    ) -> OpenVLAPolicy:
        model = load_model(checkpoint_dir, device=device, dtype=dtype)
        stats = ActionStats.from_norm_stats(model.config.norm_stats, unnorm_key)
        prompt = PromptTokenizer.from_checkpoint(checkpoint_dir, max_instruction_tokens=max_instruction_tokens)
        check_tokenizer_fits(prompt.tokenizer, model.config)
        return cls(model, prompt, stats)

    def prompt_embeddings(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(BOS embedding, embeddings of the prompt after BOS), each ``[1, T, D]``."""
        ids = torch.tensor([self.prompt_tokenizer(instruction)], device=self.model.device)
        embeds = self.model.embed_tokens(ids)
        return embeds[:, :1], embeds[:, 1:]

    def to_action(self, token_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        normalized = self.action_tokenizer.token_ids_to_normalized(token_ids.cpu().numpy()[0])
        return self.action_stats.unnormalize(normalized), normalized

    @torch.inference_mode()
    def predict(self, image: np.ndarray, instruction: str, restrict_to_actions: bool = True) -> PolicyOutput:
        """``[BOS] [patches] [prompt]`` then 7 greedy tokens; no state is kept between calls."""
        t0 = time.perf_counter()
        bos, prompt = self.prompt_embeddings(instruction)
        pixels = self.image_processor(image).to(self.model.device)
        patches = self.model.embed_image(pixels)
        t1 = time.perf_counter()
        tokens = greedy_action_tokens(
            self.model, DynamicCache(), torch.cat([bos, patches, prompt], dim=1), 0, restrict_to_actions
        ).token_ids
        t2 = time.perf_counter()
        action, normalized = self.to_action(tokens)
        return PolicyOutput(
            action, normalized, tokens.cpu().numpy()[0], {"vision": t1 - t0, "llm": t2 - t1, "total": t2 - t0}
        )
