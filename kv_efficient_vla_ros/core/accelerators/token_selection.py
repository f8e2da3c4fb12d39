"""EfficientVLA's visual token selection (arXiv 2506.10100): each frame enters the LLM, and the cache, as
``keep_tokens`` of its patch tokens, the task-relevant ones plus a diverse set.

*Relevant*: the patches the prompt's queries attended to most (at one LLM layer) on the previous tick.
Adjacent frames show nearly the same scene, so last tick's attention stands in for this one's, which
would need the LLM to have run already; a patch not kept last tick keeps the relevance it had when it
was. *Diverse*: then, greedily, the patch least similar (cosine of the patch embeddings) to every patch
chosen so far, so that a small object or a light away from the task's focus still gets a token. At the
first tick of an episode there is no attention yet and every token is chosen for diversity.

A kept patch keeps the RoPE position it has in the whole frame and the prompt follows the whole frame, so
within a tick relative distances are those of whole frames, as when EfficientVLA drops tokens inside the
LLM; the next frame follows the last kept patch (the prompt is cut off). A policy trained on whole frames
only has never seen frames with holes: ``kv-vla-train-policy --token-dropout-fraction`` trains on them,
with exactly these positions. Fewer tokens per frame make every tick cheaper and let a token budget hold more frames.
"""

from __future__ import annotations

import torch

from .config import TokenSelectionConfig


class TokenSelector:
    """Chooses each frame's tokens and learns, tick by tick, which patches the task attends to."""

    def __init__(self, config: TokenSelectionConfig, num_patches: int):
        self.config = config
        self.num_patches = num_patches
        self.reset()

    def reset(self) -> None:
        self.relevance: torch.Tensor | None = None  # [num_patches], None until a tick has been observed
        self.kept: torch.Tensor | None = None  # patch indices chosen for the frame of the running tick

    def snapshot(self) -> tuple:
        return self.relevance, self.kept

    def restore(self, state: tuple) -> None:
        self.relevance, self.kept = state

    def select(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch indices to keep of ``patches`` ``[num_patches, D]``, ascending (the frame's spatial order)."""
        k = self.config.keep_tokens
        chosen = torch.zeros(self.num_patches, dtype=torch.bool)
        if self.relevance is not None:
            relevant = round(self.config.relevant_share * k)
            chosen[self.relevance.topk(relevant).indices] = True
        features = torch.nn.functional.normalize(patches.float(), dim=-1).cpu()
        similarity = features @ features.T  # [P, P]
        if not chosen.any():  # no attention yet: start from the patch least like the frame's average
            mean = torch.nn.functional.normalize(features.mean(dim=0), dim=0)
            chosen[(features @ mean).argmin()] = True
        # each patch's highest similarity to a chosen one; the next pick is the patch where that is lowest
        closest = similarity[:, chosen].max(dim=1).values
        for _ in range(k - int(chosen.sum())):
            pick = closest.masked_fill(chosen, float("inf")).argmin()
            chosen[pick] = True
            closest = torch.maximum(closest, similarity[:, pick])
        self.kept = chosen.nonzero().flatten()
        return self.kept

    def observe(self, mass: torch.Tensor) -> None:
        """Attention the prompt put on each kept token of this tick's frame (in :meth:`select`'s order)."""
        relevance = torch.zeros(self.num_patches) if self.relevance is None else self.relevance.clone()
        relevance[self.kept] = mass.float().cpu()
        self.relevance = relevance
