"""Re-rotating cached keys to new RoPE positions.

RoPE rotates each (i, i + d/2) pair of a key by ``position * inv_freq``; rotations compose, so a key
encoded at ``p`` becomes the key that encoding at ``q`` would give by rotating it by ``q - p``. Angles
are formed in float64: a float32 ``position * inv_freq`` loses ~1e-3 rad at positions near 10^4.
"""

from __future__ import annotations

import torch

# rope types whose inverse frequencies do not depend on the sequence length
STATIC_ROPE_TYPES = ("default", "linear", "llama3")


class RopeRotator:
    @classmethod
    def for_model(cls, rotary_embedding: torch.nn.Module, text_config) -> RopeRotator:
        """The rotator of a transformers model's rotary embedding, with the rope type its config names."""
        rope_type = (getattr(text_config, "rope_parameters", None) or {}).get("rope_type", "default")
        return cls(rotary_embedding, rope_type)

    def __init__(self, rotary_embedding: torch.nn.Module, rope_type: str = "default"):
        if rope_type not in STATIC_ROPE_TYPES:
            raise ValueError(
                f"rope type {rope_type!r} changes with sequence length; re-rotation supports {STATIC_ROPE_TYPES}"
            )
        # attention_scaling multiplies cos/sin in transformers; a delta rotation must not apply it twice.
        self.inv_freq = rotary_embedding.inv_freq.detach().to(torch.float64)

    def rotate(self, keys: torch.Tensor, delta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate ``keys[..., S, D]`` by ``delta[S]`` positions (negative undoes a rotation), into ``out`` if given
        (a tensor of the same shape that does not overlap ``keys``).

        transformers' ``k * cos + rotate_half(k) * sin``, on the two halves of the head dimension in place
        of building ``rotate_half(k)`` (a roll or a concatenation would cost a pass and an allocation more).
        """
        # after an eviction most tokens move by the same few deltas: one angle table per distinct delta
        distinct, which = delta.unique(return_inverse=True)
        angles = distinct.to(self.inv_freq.device, torch.float64)[:, None] * self.inv_freq[None, :]
        cos = angles.cos()[which].to(keys.device, keys.dtype)
        sin = angles.sin()[which].to(keys.device, keys.dtype)
        out = torch.empty_like(keys) if out is None else out
        half = keys.shape[-1] // 2
        x1, x2, out1, out2 = keys[..., :half], keys[..., half:], out[..., :half], out[..., half:]
        torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-1)
        torch.mul(x2, cos, out=out2).addcmul_(x1, sin)
        return out
