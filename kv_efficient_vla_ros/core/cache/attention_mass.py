"""Attention mass onto the cache, measured beside SDPA instead of switching the model to eager attention.

The ``attention`` strategy needs, each tick, how much attention the prompt's and the action tokens'
queries put on every cached token. Eager attention materializes every weight of every query (the frame's
patches included) and slows the whole forward; here a hook after each layer's attention recomputes only
the rows that matter: those queries, with the layer's projection and RoPE, against the keys the cache
holds after the layer wrote its new ones, grouped-query heads shared and the causal rule applied as in the
forward. The model's own outputs stay SDPA's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv


class AttentionMass:
    """Accumulates, over layers and heads, the attention weights of chosen query rows onto the first
    ``history_end`` cached tokens (BOS, the history chunks, this tick's frame)."""

    def __init__(self, model, history_end: int, layers: tuple[int, ...] | None = None):
        """``layers``: the LLM layers to score at (default all)."""
        all_layers = model.language_model.model.layers
        self.layers = all_layers if layers is None else [all_layers[i] for i in layers]
        self.history_end = history_end
        self.mass = torch.zeros(history_end, dtype=torch.float32, device=model.device)  # no sync per layer

    @contextmanager
    def rows_from(self, first_query: int) -> Iterator[None]:
        """Score the queries from row ``first_query`` of each forward run inside the block."""

        def hook(module, args, kwargs, output):
            self._add(module, kwargs, first_query)

        handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in self.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def _add(self, attention, kwargs: dict, first_query: int) -> None:
        hidden = kwargs["hidden_states"]
        batch, q_len, _ = hidden.shape
        rows = hidden[:, first_query:]
        query = attention.q_proj(rows).view(batch, rows.shape[1], -1, attention.head_dim).transpose(1, 2)
        cos, sin = (t[:, first_query:] for t in kwargs["position_embeddings"])
        query, _ = apply_rotary_pos_emb(query, query, cos, sin)
        keys = repeat_kv(kwargs["past_key_values"].layers[attention.layer_idx].keys, attention.num_key_value_groups)
        scores = torch.matmul(query, keys.transpose(2, 3)).float() * attention.scaling  # [B, H, rows, L]
        # row i is token (L - q_len + first_query + i): it sees the keys up to itself
        length = keys.shape[2]
        seen = torch.arange(length, device=keys.device)[None, :] <= (
            length - q_len + first_query + torch.arange(rows.shape[1], device=keys.device)[:, None]
        )
        weights = scores.masked_fill(~seen, float("-inf")).softmax(dim=-1)
        self.mass += weights[0, :, :, : self.history_end].sum(dim=(0, 1))
