"""VLA-Cache's token reuse (arXiv 2502.02175): patches that barely changed since the previous frame take
that frame's keys and values instead of being recomputed.

*Which*: a patch whose pixels (the resized frame's 14-px patch, as the model sees it) have cosine
similarity of at least ``similarity_threshold`` to the same patch of the previous frame, the most similar
first, at most ``max_reuse_share`` of the frame, never one of the ``relevant_share`` patches the prompt
attended to most on the previous tick (where the task happens, which must stay fresh).

*Where*: the layers of a transformer refine a token progressively, so VLA-Cache reuses more in the layers
whose attention has already focused: with ``layer_adaptive``, layer l reuses the share
``min(1, k * sum_{j<=l} R_j)`` of the reusable tokens (eq. 9; ``R_j`` the relative drop of the prompt's
attention entropy from layer j-1 to j on the previous tick, layer 0 recomputes all), made non-decreasing
so that a token, once reused, is reused in every deeper layer (its hidden state is no longer computed).

*How the reused K/V live in a cache that keeps history*: the previous frame's keys and values are copied
aside after its prefill (one frame's K/V, every layer; the cache may evict or summarize that frame, and
``none`` drops it, before the next tick). A reused token's K/V are copied from there into the new frame's
slots with keys re-rotated from the old frame's positions to the new ones (:class:`RopeRotator`), so the
new frame is a frame like any other: chunked, kept, evicted and summarized by every strategy, with its
own positions. The prefill then computes only the other tokens, layer by layer (:func:`prefill_reusing`):
queries of the computed rows against every key of the cache, reused ones included, under an explicit
causal mask in the frame's order, through the same SDPA attention.

What reuse approximates: a reused token's K/V are those computed one frame earlier, with a history one
frame shorter (the token did not see the previous frame, which was itself). With ``none`` (stock OpenVLA,
VLA-Cache's setting) an unchanged frame reused everywhere gives exactly the recomputed result (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache.manager import ChunkedCache
from ..cache.storage import KEYS
from ..openvla.modeling import OpenVLAModel
from ..openvla.processor import ImageProcessor
from ..policy import OpenVLAPolicy
from .config import TokenReuseConfig


def patch_pixels(pixels: torch.Tensor, patch: int, processor: ImageProcessor) -> torch.Tensor:
    """``[P, 3 * patch**2]`` the RGB pixels of each patch of a frame ``[1, C, S, S]`` as ``processor`` made it
    (normalization undone; a fused backbone's channels are copies of the same RGB)."""
    rgb = pixels[:, :3].float() * processor.std[:, :3] + processor.mean[:, :3]
    _, c, s, _ = rgb.shape
    grid = s // patch
    return rgb.reshape(c, grid, patch, grid, patch).permute(1, 3, 0, 2, 4).reshape(grid * grid, -1)


def layer_reuse_shares(entropy: torch.Tensor, sensitivity: float) -> torch.Tensor:
    """VLA-Cache eq. 9: the share of reusable tokens each layer reuses, from the prompt's attention entropy
    per layer on the previous tick; non-decreasing with depth, 0 at layer 0."""
    entropy = entropy.double().clamp_min(1e-12)
    drop = torch.zeros_like(entropy)
    drop[1:] = (entropy[:-1] - entropy[1:]) / entropy[:-1]
    shares = (sensitivity * drop.cumsum(0)).clamp(0.0, 1.0)
    return shares.cummax(0).values.float()


@dataclass(frozen=True)
class ReusePlan:
    """Per frame token (in the frame's order): the first layer at which it is reused (``num_layers``: computed
    in every layer), and where its K/V come from (the previous frame's patch) and go (position shift)."""

    reuse_from: torch.Tensor  # [frame_tokens] long
    source: torch.Tensor  # [frame_tokens] patch index in the previous frame's K/V
    delta: torch.Tensor  # [frame_tokens] new position - old position
    num_layers: int

    @property
    def reused(self) -> torch.Tensor:
        return self.reuse_from < self.num_layers

    def share(self) -> float:
        """Share of the frame's token-layers reused (1 - the share of its prefill work done)."""
        layers = (self.num_layers - self.reuse_from).clamp(min=0)
        return float(layers.sum()) / max(1, self.num_layers * len(self.reuse_from))


class TokenReuser:
    """The previous frame (pixels, K/V, positions) and what the last tick's attention said; plans each frame's
    reuse and remembers the frame after its prefill."""

    def __init__(self, config: TokenReuseConfig, policy: OpenVLAPolicy, cache: ChunkedCache):
        config.validate()
        self.config = config
        vla = policy.config
        self.num_patches = vla.num_patches
        self.num_layers = vla.text_config.num_hidden_layers
        self.patch = vla.vision_specs[0].patch_size
        self.image_processor = policy.image_processor
        layers, kv, batch, heads, _, dim = cache.storage.buffer.shape
        shape = (layers, kv, batch, heads, self.num_patches, dim)
        # two buffers, written alternately: a failed tick's snapshot still holds the previous frame's
        self._buffers = [cache.storage.buffer.new_zeros(shape) for _ in range(2)]
        self.reset()

    def reset(self) -> None:
        self.current = 0
        self.pixels: torch.Tensor | None = None  # [P, 3 p p] of the previous frame
        self.positions: torch.Tensor | None = None  # [P] where each patch of the previous frame was encoded
        self.valid: torch.Tensor | None = None  # [P] the previous frame had this patch (token selection)
        self.relevance: torch.Tensor | None = None  # [P] the prompt's attention on the previous frame
        self.shares: torch.Tensor | None = None  # [layers] reuse share per layer, from the previous tick
        self.new_pixels: torch.Tensor | None = None

    def snapshot(self) -> tuple:
        return self.current, self.pixels, self.positions, self.valid, self.relevance, self.shares

    def restore(self, state: tuple) -> None:
        self.current, self.pixels, self.positions, self.valid, self.relevance, self.shares = state

    def plan(self, pixels: torch.Tensor, patches: torch.Tensor, positions: torch.Tensor) -> ReusePlan | None:
        """Which of the frame's tokens (patch indices ``patches``, to be encoded at ``positions``) to reuse,
        from which layer on; None when nothing is reused (the first frame, or nothing similar enough)."""
        self.new_pixels = patch_pixels(pixels.cpu(), self.patch, self.image_processor)
        if self.pixels is None or self.shares is None:
            return None
        cfg = self.config
        similarity = torch.nn.functional.cosine_similarity(self.new_pixels, self.pixels, dim=1)[patches]
        candidate = (similarity >= cfg.similarity_threshold) & self.valid[patches]
        relevant = round(cfg.relevant_share * self.num_patches)
        if relevant:
            candidate &= ~torch.isin(patches, self.relevance.topk(relevant).indices)
        count = min(int(candidate.sum()), int(cfg.max_reuse_share * len(patches)))
        if count == 0:
            return None
        order = similarity.masked_fill(~candidate, -2.0).argsort(descending=True)
        reuse_from = torch.full((len(patches),), self.num_layers, dtype=torch.long)
        reused_by_layer = (self.shares * count).floor().long()  # non-decreasing
        rank = torch.arange(count)
        # token of rank r is reused from the first layer that reuses more than r tokens
        first = torch.searchsorted(reused_by_layer, rank, right=True)
        reuse_from[order[:count]] = first
        if not bool((reuse_from < self.num_layers).any()):
            return None
        delta = positions.cpu() - self.positions[patches]
        return ReusePlan(reuse_from, patches.cpu(), delta, self.num_layers)

    def remember(
        self,
        cache: ChunkedCache,
        slots: torch.Tensor,
        patches: torch.Tensor,
        entropy: torch.Tensor | None,
        relevance: torch.Tensor,
    ) -> None:
        """After the prefill: this frame's K/V (``slots`` of the cache, patch indices ``patches``), its
        positions, pixels, and the prompt's attention (entropy per layer, None when not layer-adaptive; mass
        per kept patch)."""
        spare = 1 - self.current
        buffer = self._buffers[spare]
        storage = cache.storage
        buffer.index_copy_(4, patches.to(buffer.device), storage.buffer.index_select(4, slots.to(storage.device)))
        self.current = spare
        positions = torch.zeros(self.num_patches, dtype=torch.long)
        positions[patches] = storage.positions[slots]
        valid = torch.zeros(self.num_patches, dtype=torch.bool)
        valid[patches] = True
        relevance_all = torch.zeros(self.num_patches)
        relevance_all[patches] = relevance.float().cpu()
        self.pixels, self.positions, self.valid, self.relevance = self.new_pixels, positions, valid, relevance_all
        if entropy is not None:
            self.shares = layer_reuse_shares(entropy.cpu(), self.config.entropy_sensitivity)
        else:
            self.shares = torch.ones(self.num_layers)

    def source_kv(self, plan: ReusePlan, rotator) -> torch.Tensor:
        """``[L, 2, B, H, R, D]`` the reused tokens' K/V, keys re-rotated to the new positions."""
        reused = plan.reused
        kv = self._buffers[self.current].index_select(4, plan.source[reused].to(self._buffers[0].device))
        kv[:, KEYS] = rotator.rotate(kv[:, KEYS], plan.delta[reused])
        return kv


class _SlotWriter:
    """What a decoder layer sees as its cache during :func:`prefill_reusing`: the computed rows' K/V go to
    their slots, and the layer then attends to everything up to ``end``."""

    def __init__(self, cache: ChunkedCache, slots: torch.Tensor, end: int):
        self.layers, self.storage, self.slots, self.end = cache.layers, cache.storage, slots, end

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.storage.write_at(layer_idx, self.slots, keys, values, self.end)


def prefill_reusing(
    model: OpenVLAModel,
    embeds: torch.Tensor,
    positions: torch.Tensor,
    cache: ChunkedCache,
    reuse_from: torch.Tensor,
    reused_kv: torch.Tensor | None,
) -> torch.Tensor:
    """:meth:`OpenVLAModel.hidden_states` over ``embeds`` ``[1, n, D]`` appended to ``cache``, where token i is
    computed only in the layers below ``reuse_from[i]`` (``[n]``) and its K/V from there on are
    ``reused_kv`` (``[L, 2, B, H, R, D]``, the tokens with ``reuse_from < L`` in order). Returns the final
    hidden states of the tokens computed in the last layer (the prompt's among them, last)."""
    llm = model.language_model.model
    n, start = embeds.shape[1], cache.length
    end = start + n
    storage = cache.storage
    storage.ensure_capacity(end)
    reuse_from = reuse_from.to(embeds.device)
    reused = reuse_from < len(llm.layers)
    if reused_kv is not None and bool(reused.any()):
        # every layer's copy at once; the layers that still compute a token overwrite its slot
        slots = start + reused.nonzero().flatten()
        storage.buffer.index_copy_(4, slots.to(storage.device), reused_kv)
    cos, sin = llm.rotary_emb(embeds, position_ids=positions)
    tick_index = torch.arange(n, device=embeds.device)
    keys_index = torch.arange(end, device=embeds.device)
    hidden, active = embeds, tick_index
    for layer_idx, layer in enumerate(llm.layers[: llm.config.num_hidden_layers]):
        keep = reuse_from[active] > layer_idx
        if not bool(keep.all()):
            hidden, active = hidden[:, keep], active[keep]
        # causal in the tick's order, reused tokens included; the whole history is visible (True: attend)
        visible = keys_index[None, :] <= (start + active)[:, None]
        hidden = layer(
            hidden,
            attention_mask=visible[None, None],
            position_embeddings=(cos[:, active], sin[:, active]),
            position_ids=positions[:, active],
            past_key_values=_SlotWriter(cache, start + active, end),
            use_cache=True,
        )
    return llm.norm(hidden)
