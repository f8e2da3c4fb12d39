"""All layers' keys and values in one tensor, presented to transformers as per-layer views (``StorageLayer``).

One buffer ``[layers, 2 (k, v), batch, kv_heads, capacity, head_dim]`` lets eviction gather, summarize
and re-rotate every layer, batch row and head in single tensor operations, and lets appends write in
place instead of concatenating (transformers' ``DynamicLayer`` copies the whole layer per token).
"""

from __future__ import annotations

import math

import torch
from transformers.cache_utils import CacheLayerMixin

KEYS, VALUES = 0, 1


class KVStorage:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        self.buffer = torch.zeros(num_layers, 2, batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        # RoPE position each cached token's key is rotated to (shared by layers, batch and heads)
        self.positions = torch.zeros(capacity, dtype=torch.long)
        self.layer_lengths = [0] * num_layers
        # work space of gathers (moves, summaries), named; each grows to its largest use, then is reused, so that
        # eviction allocates nothing per tick (a fresh tensor of this size costs page faults on every tick)
        self.scratch: dict[str, torch.Tensor] = {}

    @property
    def capacity(self) -> int:
        return self.buffer.shape[4]

    @property
    def num_layers(self) -> int:
        return self.buffer.shape[0]

    @property
    def kv_heads(self) -> int:
        return self.buffer.shape[3]

    @property
    def head_dim(self) -> int:
        return self.buffer.shape[5]

    @property
    def device(self) -> torch.device:
        return self.buffer.device

    @property
    def length(self) -> int:
        """Tokens every layer holds (layers differ only in the middle of a forward)."""
        return min(self.layer_lengths)

    @property
    def bytes_per_token(self) -> int:
        layers, kv, batch, heads, _, dim = self.buffer.shape
        return layers * kv * batch * heads * dim * self.buffer.element_size()

    def live(self) -> torch.Tensor:
        """``[L, 2, B, H, length, D]`` view of the valid tokens."""
        return self.buffer[..., : self.length, :]

    def ensure_capacity(self, tokens: int) -> None:
        if tokens <= self.capacity:
            return
        grown = max(tokens, 2 * self.capacity)
        shape = (*self.buffer.shape[:4], grown, self.buffer.shape[5])
        buffer = torch.zeros(shape, dtype=self.buffer.dtype, device=self.buffer.device)
        buffer[..., : self.capacity, :] = self.buffer
        positions = torch.zeros(grown, dtype=torch.long)
        positions[: self.capacity] = self.positions
        self.buffer, self.positions = buffer, positions

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.layer_lengths[layer]
        end = start + keys.shape[-2]
        self.ensure_capacity(end)
        self.buffer[layer, KEYS, :, :, start:end] = keys
        self.buffer[layer, VALUES, :, :, start:end] = values
        self.layer_lengths[layer] = end
        return self.buffer[layer, KEYS, :, :, :end], self.buffer[layer, VALUES, :, :, :end]

    def write_at(
        self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, end: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write tokens into ``slots`` (below ``end``) of one layer, which then holds ``end`` tokens: a forward
        that computes only some of its tokens (the others were written already, VLA-Cache's reuse)."""
        index = slots.to(self.device)
        self.buffer[layer, KEYS].index_copy_(2, index, keys)
        self.buffer[layer, VALUES].index_copy_(2, index, values)
        self.layer_lengths[layer] = end
        return self.buffer[layer, KEYS, :, :, :end], self.buffer[layer, VALUES, :, :, :end]

    def work(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A contiguous ``shape`` view of the work space ``name`` (valid until the next use of that name)."""
        numel = math.prod(shape)
        if name not in self.scratch or self.scratch[name].numel() < numel:
            self.scratch[name] = torch.empty(numel, dtype=self.buffer.dtype, device=self.buffer.device)
        return self.scratch[name][:numel].view(shape)

    def gather(self, slots: torch.Tensor) -> torch.Tensor:
        """``[L, 2, B, H, len(slots), D]``: the tokens at ``slots``, in the work space (valid until the next gather)."""
        layers, kv, batch, heads, _, dim = self.buffer.shape
        tokens = self.work("gather", (layers, kv, batch, heads, len(slots), dim))
        return torch.index_select(self.buffer, 4, slots.to(self.device), out=tokens)

    def move(self, source: torch.Tensor, dest: torch.Tensor) -> None:
        """Copy the tokens (keys, values, positions) at slots ``source`` to slots ``dest`` (disjoint from them)."""
        self.buffer.index_copy_(4, dest.to(self.device), self.gather(source))
        self.positions[dest] = self.positions[source]

    def rotate_keys(self, slots: torch.Tensor, delta: torch.Tensor, rotator) -> None:
        """Re-rotate the keys at ``slots`` by ``delta`` positions (every layer, batch row and head)."""
        index = slots.to(self.device)
        keys = self.buffer[:, KEYS].index_select(3, index)
        self.buffer[:, KEYS].index_copy_(3, index, rotator.rotate(keys, delta))
        self.positions[slots] += delta

    def set_positions(self, start: int, positions: torch.Tensor) -> None:
        self.positions[start : start + len(positions)] = positions

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens (the one way the cache gets shorter without eviction)."""
        self.layer_lengths = [min(n, length) for n in self.layer_lengths]


class StorageLayer(CacheLayerMixin):
    """transformers' per-layer cache interface over one layer of a :class:`KVStorage`."""

    is_sliding = False
    is_compileable = False
    is_croppable = True  # through ChunkedCache.crop

    def __init__(self, storage: KVStorage, index: int):
        self.storage = storage
        self.index = index
        self.is_initialized = True

    @property
    def keys(self) -> torch.Tensor:
        return self.storage.buffer[self.index, KEYS, :, :, : self.get_seq_length()]

    @property
    def values(self) -> torch.Tensor:
        return self.storage.buffer[self.index, VALUES, :, :, : self.get_seq_length()]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # the storage is allocated up front

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return self.storage.write(self.index, key_states, value_states)

    def get_seq_length(self) -> int:
        return self.storage.layer_lengths[self.index]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1
