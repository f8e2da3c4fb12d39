"""Summarizing a chunk of c tokens into s tokens.

Token g of a summary stands for the chunk's tokens in group g, ``[floor(g c / s), floor((g + 1) c / s))``:
its value is their mean value; its key is their mean key with RoPE undone, rotated to the group's mean
position (rounded down). Averaging keys in the un-rotated frame keeps them one coherent direction
instead of mixing rotations. (A summary token receives roughly the attention of one group member, not
of the whole group: an approximation that the gate's thresholds and training account for.)
"""

from __future__ import annotations

import torch

from .rope import RopeRotator
from .storage import KEYS


def group_index(chunk_len: int, summary_tokens: int) -> torch.Tensor:
    """Group of each token of a chunk: g such that floor(g c / s) <= i < floor((g + 1) c / s)."""
    tokens = torch.arange(chunk_len)
    return ((tokens + 1) * summary_tokens + chunk_len - 1) // chunk_len - 1


def summarize(
    buffer: torch.Tensor,
    positions: torch.Tensor,
    slots: torch.Tensor,
    summary_tokens: int,
    rotator: RopeRotator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summaries of the chunks whose tokens sit at ``slots`` ``[n, c]`` of ``buffer`` ``[L, 2, B, H, S, D]``.

    Returns ``[L, 2, B, H, n * summary_tokens, D]`` tokens and their ``[n * summary_tokens]`` positions,
    chunk by chunk. All layers, batch rows, heads and chunks in one pass.
    """
    n, chunk_len = slots.shape
    index = slots.reshape(-1)
    tokens = buffer.index_select(4, index.to(buffer.device))  # [L, 2, B, H, n * c, D]
    token_positions = positions[index]
    tokens[:, KEYS] = rotator.rotate(tokens[:, KEYS], -token_positions)  # undo RoPE

    groups = (group_index(chunk_len, summary_tokens)[None, :] + summary_tokens * torch.arange(n)[:, None]).reshape(-1)
    counts = torch.bincount(groups, minlength=n * summary_tokens)
    shape = (*tokens.shape[:4], n * summary_tokens, tokens.shape[5])
    sums = torch.zeros(shape, dtype=tokens.dtype, device=tokens.device).index_add_(4, groups.to(tokens.device), tokens)
    means = sums / counts.to(tokens.dtype).to(tokens.device)[:, None]
    position_sums = torch.zeros(n * summary_tokens, dtype=torch.long).index_add_(0, groups, token_positions)
    summary_positions = torch.div(position_sums, counts, rounding_mode="floor")
    means[:, KEYS] = rotator.rotate(means[:, KEYS], summary_positions)
    return means, summary_positions
