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
    ``history_end`` cached tokens (BOS, the history chunks, this tick's frame); with ``entropy``, also the
    mean entropy of those rows' attention at each layer (VLA-Cache's per-layer reuse)."""

    def __init__(
        self,
        model,
        history_end: int,
        layers: tuple[int, ...] | None = None,
        entropy: bool = False,
        mass_layers: tuple[int, ...] | None = None,
    ):
        """``layers``: the LLM layers to score at (default all); ``mass_layers``: those of them whose weights
        the mass sums (default all scored; the entropy needs every layer, relevance only one)."""
        all_layers = model.language_model.model.layers
        indices = range(len(all_layers)) if layers is None else layers
        self.layers = [all_layers[i] for i in indices]
        self.in_mass = [mass_layers is None or i in mass_layers for i in indices]
        self.history_end = history_end
        self.mass = torch.zeros(history_end, dtype=torch.float32, device=model.device)  # no sync per layer
        self.entropy = torch.zeros(len(self.layers), device=model.device) if entropy else None

    @contextmanager
    def last_rows(self, n: int) -> Iterator[None]:
        """Score the last ``n`` queries of each forward run inside the block (the prompt's, a decoded token's):
        the last tokens of the sequence whatever rows before them a forward skipped."""

        def hook_for(index: int):
            def hook(module, args, kwargs, output):
                self._add(module, kwargs, n, index)

            return hook

        handles = [
            layer.self_attn.register_forward_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def _add(self, attention, kwargs: dict, n: int, index: int) -> None:
        rows = kwargs["hidden_states"][:, -n:]
        batch = rows.shape[0]
        query = attention.q_proj(rows).view(batch, n, -1, attention.head_dim).transpose(1, 2)
        cos, sin = (t[:, -n:] for t in kwargs["position_embeddings"])
        query, _ = apply_rotary_pos_emb(query, query, cos, sin)
        keys = repeat_kv(kwargs["past_key_values"].layers[attention.layer_idx].keys, attention.num_key_value_groups)
        scores = torch.matmul(query, keys.transpose(2, 3)).float() * attention.scaling  # [B, H, n, L]
        # row i is token L - n + i: it sees the keys up to itself
        length = keys.shape[2]
        seen = torch.arange(length, device=keys.device)[None, :] <= (
            length - n + torch.arange(n, device=keys.device)[:, None]
        )
        weights = scores.masked_fill(~seen, float("-inf")).softmax(dim=-1)
        if self.in_mass[index]:
            self.mass += weights[0, :, :, : self.history_end].sum(dim=(0, 1))
        if self.entropy is not None:
            self.entropy[index] = -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1).mean()
