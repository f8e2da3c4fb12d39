"""Greedy decoding of the 7 action tokens on top of whatever the cache already holds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from .action_tokenizer import ACTION_DIM
from .modeling import OpenVLAModel

# How the 7 action tokens are chosen (docs/architecture.md, "Decoding").
BEST_ACTION_BIN = "best_action_bin"  # argmax over the 256 action ids only: always a real action bin
OFFICIAL = "official"  # OpenVLA's predict_action: argmax over the whole vocabulary, de-tokenized as it does
DECODINGS = (BEST_ACTION_BIN, OFFICIAL)


def restricts_to_actions(decoding: str) -> bool:
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, not {decoding!r}")
    return decoding == BEST_ACTION_BIN


def positions(start: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, start + length, device=device).unsqueeze(0)


@dataclass
class Decoded:
    token_ids: torch.Tensor  # [B, 7] vocabulary ids
    action_logits: torch.Tensor | None  # [B, 7, n_bins] when decoding over the action ids only


@torch.inference_mode()
def greedy_action_tokens(
    model: OpenVLAModel,
    cache: Cache,
    inputs_embeds: torch.Tensor,
    start_position: int,
    restrict_to_actions: bool = True,
    n_tokens: int = ACTION_DIM,
) -> Decoded:
    """Append ``inputs_embeds`` at ``start_position`` and decode ``n_tokens`` greedily.

    With ``restrict_to_actions`` the logits cover only the action ids (exactly the full-vocabulary
    logits of those rows, at a fraction of the cost); otherwise the whole vocabulary, as the official
    ``generate`` does. The cache grows by ``len(inputs_embeds) + n_tokens - 1`` tokens: the last token
    is chosen but never fed back.
    """
    pos = positions(start_position, inputs_embeds.shape[1], inputs_embeds.device)
    hidden = model.hidden_states(inputs_embeds, pos, cache)
    position = start_position + inputs_embeds.shape[1]
    return decode_after(model, cache, hidden[:, -1], position, restrict_to_actions, n_tokens)


@torch.inference_mode()
def decode_after(
    model: OpenVLAModel,
    cache: Cache,
    last_hidden: torch.Tensor,
    position: int,
    restrict_to_actions: bool = True,
    n_tokens: int = ACTION_DIM,
) -> Decoded:
    """Greedy decoding of ``n_tokens`` from ``last_hidden`` ``[B, D]``, the final hidden state of the last token
    the cache holds (whose successor goes to ``position``): the first token costs no forward."""
    chosen, logits_seen = [], []
    for step in range(n_tokens):
        if restrict_to_actions:
            logits = model.action_logits(last_hidden)
            token = logits.argmax(dim=-1) + model.action_ids.start
            logits_seen.append(logits)
        else:
            token = model.vocab_logits(last_hidden).argmax(dim=-1)
        chosen.append(token)
        if step + 1 == n_tokens:
            break
        hidden = model.next_token_hidden(model.embed_tokens(token[:, None]), position, cache)
        last_hidden = hidden[:, -1]
        position += 1
    action_logits = torch.stack(logits_seen, dim=1) if logits_seen else None
    return Decoded(torch.stack(chosen, dim=1), action_logits)
