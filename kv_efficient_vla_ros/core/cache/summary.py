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
from .storage import KEYS, VALUES, KVStorage


def group_index(chunk_len: int, summary_tokens: int) -> torch.Tensor:
    """Group of each token of a chunk: g such that floor(g c / s) <= i < floor((g + 1) c / s)."""
    tokens = torch.arange(chunk_len)
    return ((tokens + 1) * summary_tokens + chunk_len - 1) // chunk_len - 1


def summarize(
    storage: KVStorage, slots: torch.Tensor, summary_tokens: int, rotator: RopeRotator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summaries of the chunks whose tokens sit at ``slots`` ``[n, c]`` of ``storage``.

    Returns ``[L, 2, B, H, n * summary_tokens, D]`` tokens and their ``[n * summary_tokens]`` positions,
    chunk by chunk. All layers, batch rows, heads and chunks in one pass, in the storage's work space.
    """
    n, chunk_len = slots.shape
    index = slots.reshape(-1)
    tokens = storage.gather(index)  # [L, 2, B, H, n * c, D]
    token_positions = storage.positions[index]
    keys = tokens[:, KEYS]
    raw_keys = rotator.rotate(keys, -token_positions, out=storage.work("raw keys", keys.shape))  # undo RoPE

    groups = (group_index(chunk_len, summary_tokens)[None, :] + summary_tokens * torch.arange(n)[:, None]).reshape(-1)
    counts = torch.bincount(groups, minlength=n * summary_tokens)
    position_sums = torch.zeros(n * summary_tokens, dtype=torch.long).index_add_(0, groups, token_positions)
    summary_positions = torch.div(position_sums, counts, rounding_mode="floor")
    groups, counts = groups.to(storage.device), counts.to(storage.device, tokens.dtype)[:, None]
    means = tokens.new_zeros((*tokens.shape[:4], n * summary_tokens, tokens.shape[5]))
    means[:, KEYS].index_add_(3, groups, raw_keys).div_(counts)
    means[:, VALUES].index_add_(3, groups, tokens[:, VALUES]).div_(counts)
    means[:, KEYS] = rotator.rotate(means[:, KEYS], summary_positions)
    return means, summary_positions
