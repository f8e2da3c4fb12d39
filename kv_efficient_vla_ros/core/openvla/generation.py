"""Greedy decoding of the 7 action tokens on top of whatever the cache already holds."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from .action_tokenizer import ACTION_DIM
from .modeling import OpenVLAModel


def positions(start: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, start + length, device=device).unsqueeze(0)


@torch.inference_mode()
def greedy_action_tokens(
    model: OpenVLAModel,
    cache: Cache,
    inputs_embeds: torch.Tensor,
    start_position: int,
    restrict_to_actions: bool = True,
    n_tokens: int = ACTION_DIM,
) -> torch.Tensor:
    """Append ``inputs_embeds`` at ``start_position`` and decode ``n_tokens`` greedily.

    With ``restrict_to_actions`` the logits cover only the action ids (exactly the full-vocabulary
    logits of those rows, at a fraction of the cost); otherwise the whole vocabulary, as the official
    ``generate`` does. Returns vocabulary ids ``[B, n_tokens]``. The cache grows by
    ``len(inputs_embeds) + n_tokens - 1`` tokens: the last token is chosen but never fed back.
    """
    chosen = []
    embeds, position = inputs_embeds, start_position
    for step in range(n_tokens):
        hidden = model.hidden_states(embeds, positions(position, embeds.shape[1], embeds.device), cache)
        last = hidden[:, -1]
        if restrict_to_actions:
            token = model.action_logits(last).argmax(dim=-1) + model.action_ids.start
        else:
            token = model.vocab_logits(last).argmax(dim=-1)
        chosen.append(token)
        position += embeds.shape[1]
        if step + 1 < n_tokens:
            embeds = model.embed_tokens(token[:, None])
    return torch.stack(chosen, dim=1)
