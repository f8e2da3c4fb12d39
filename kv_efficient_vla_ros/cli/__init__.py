"""Console commands (the ``kv-vla-*`` entry points)."""
