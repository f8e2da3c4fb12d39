"""The KV cache kept across control ticks: chunked storage, eviction strategies, and the recurrent gate."""

from .config import CacheConfig
from .manager import ChunkedCache, UpdateReport
from .strategies import STRATEGIES, STRATEGY_NAMES, EvictionStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "CacheConfig",
    "ChunkedCache",
    "EvictionStrategy",
    "UpdateReport",
    "make_strategy",
]
