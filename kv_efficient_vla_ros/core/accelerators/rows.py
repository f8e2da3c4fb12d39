"""Benchmark and evaluation rows with accelerators: `gated+select+reuse+prune` is `gated` with token selection
and token reuse, on the pruned policy. One place builds what a set of rows needs (the selection and reuse
settings, the pruned policy once) and the runner of each row, for ``kv-vla-bench-cache`` and ``kv-vla-eval``
alike."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..cache.config import CacheConfig
from ..policy import OpenVLAPolicy
from ..runner import PolicyRunner
from .config import PRUNE, REUSE, SELECT, TokenReuseConfig, TokenSelectionConfig, default_keep_tokens, split_row
from .layer_pruning import layers_to_drop, pruned_policy


@dataclass
class RowAccelerators:
    selection: TokenSelectionConfig  # of the `+select` rows
    pruned: OpenVLAPolicy | None  # of the `+prune` rows; None when no row prunes
    reuse: TokenReuseConfig  # of the `+reuse` rows

    @classmethod
    def for_rows(
        cls,
        policy: OpenVLAPolicy,
        rows: Iterable[str],
        keep_tokens: int = 0,
        prune_layers: int = 1,
        layer_importance: str = "",
        reuse: TokenReuseConfig | None = None,
    ) -> RowAccelerators:
        """What ``rows`` need: ``keep_tokens`` per selected frame (0: :func:`default_keep_tokens`), ``reuse``
        settings (default: the YAML's, enabled), and, if a row prunes, ``policy`` without its ``prune_layers``
        least important layers by ``layer_importance``."""
        selection = TokenSelectionConfig(keep_tokens=keep_tokens or default_keep_tokens(policy.config.num_patches))
        reuse = reuse or TokenReuseConfig(enabled=True)
        if not any(PRUNE in split_row(row)[1] for row in rows):
            return cls(selection, None, reuse)
        if not layer_importance:
            raise ValueError(f"{PRUNE} rows need a layer importance file (kv-vla-calibrate-layers)")
        layers = policy.config.text_config.num_hidden_layers
        return cls(selection, pruned_policy(policy, layers_to_drop(layer_importance, prune_layers, layers)), reuse)

    def runner(self, policy: OpenVLAPolicy, row: str, cache: CacheConfig) -> PolicyRunner:
        """The runner of ``row`` over ``cache`` (whose strategy the caller chose for the row)."""
        accelerators = split_row(row)[1]
        return PolicyRunner(
            self.pruned if PRUNE in accelerators else policy,
            cache,
            token_selection=self.selection if SELECT in accelerators else None,
            token_reuse=self.reuse if REUSE in accelerators else None,
        )
