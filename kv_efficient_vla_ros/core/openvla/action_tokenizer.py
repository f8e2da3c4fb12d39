"""Action tokens <-> normalized actions <-> robot actions, as official OpenVLA ``predict_action`` does it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTION_DIM = 7


class UnnormKeyError(KeyError):
    """The ``unnorm_key`` is missing, unknown, or ambiguous; the message lists the known keys."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def select_unnorm_key(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> str:
    keys = sorted(norm_stats)
    if not keys:
        raise UnnormKeyError("the checkpoint has no norm_stats (config.json or dataset_statistics.json)")
    if unnorm_key is None or unnorm_key == "":
        if len(keys) == 1:
            return keys[0]
        raise UnnormKeyError(f"unnorm_key is required: the checkpoint has statistics for {keys}")
    if unnorm_key not in norm_stats:
        raise UnnormKeyError(f"unnorm_key {unnorm_key!r} not found; the checkpoint has {keys}")
    return unnorm_key


@dataclass(frozen=True)
class ActionStats:
    """Per-dimension q01/q99 bounds; dimensions with ``mask`` false pass through un-normalization."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_norm_stats(cls, norm_stats: Mapping[str, Any], unnorm_key: str | None) -> ActionStats:
        key = select_unnorm_key(norm_stats, unnorm_key)
        action = norm_stats[key]["action"]
        q01 = np.asarray(action["q01"], dtype=np.float64)
        q99 = np.asarray(action["q99"], dtype=np.float64)
        mask = np.asarray(action.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
        if not (q01.shape == q99.shape == mask.shape == (ACTION_DIM,)):
            raise ValueError(f"norm_stats[{key!r}]['action'] must hold {ACTION_DIM}-vectors q01, q99, mask")
        return cls(q01, q99, mask)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        scaled = 0.5 * (normalized + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, scaled, normalized)


class ActionTokenizer:
    """Maps the last ``n_bins`` vocabulary ids to bin centers over [-1, 1].

    ``d = text_vocab_size - token_id``; bin index ``clip(d - 1, 0, n_bins - 2)`` into the
    ``n_bins - 1`` centers of ``linspace(-1, 1, n_bins)``, exactly as official ``predict_action`` and
    ``ActionTokenizer.decode_token_ids_to_actions`` do. Any id maps: one below the last ``n_bins - 1``
    text ids to the last center (+0.996), one past the text vocabulary (padding rows) to the first (-0.996).
    """

    def __init__(self, text_vocab_size: int, n_bins: int = 256):
        self.text_vocab_size = text_vocab_size
        self.n_bins = n_bins
        bins = np.linspace(-1.0, 1.0, n_bins)
        self.bin_centers = (bins[:-1] + bins[1:]) / 2.0
        self.first_action_id = text_vocab_size - n_bins

    def token_ids_to_normalized(self, token_ids: np.ndarray) -> np.ndarray:
        distance = self.text_vocab_size - np.asarray(token_ids, dtype=np.int64)
        index = np.clip(distance - 1, 0, len(self.bin_centers) - 1)
        return self.bin_centers[index]

    def normalized_to_token_ids(self, actions: np.ndarray) -> np.ndarray:
        """The official tokenization (``vocab_size - digitize(a, bins)``): used for training targets."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return self.text_vocab_size - np.digitize(clipped, np.linspace(-1.0, 1.0, self.n_bins))

    def action_index_to_token_ids(self, index: np.ndarray) -> np.ndarray:
        """Index into the restricted (action-ids-only) logits -> vocabulary ids."""
        return self.first_action_id + np.asarray(index, dtype=np.int64)
