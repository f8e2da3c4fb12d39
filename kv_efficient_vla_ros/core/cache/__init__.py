"""The KV cache kept across control ticks: chunked storage, eviction policies, and the recurrent gate."""

from .config import POLICIES, CacheConfig
from .manager import ChunkedCache, UpdateReport

__all__ = ["POLICIES", "CacheConfig", "ChunkedCache", "UpdateReport"]
