"""A synthetic camera: a colored cube sliding over a table, rendered with numpy (no simulator needed)."""

from __future__ import annotations

import numpy as np


def synthetic_frames(n_frames: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """``n_frames`` RGB uint8 frames of a red square moving along a seeded path, with sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    table = np.stack([90 + 40 * yy / size, 80 + 30 * xx / size, 70 * np.ones_like(xx)], axis=-1)
    start, end = rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0.2, 0.8, 2) * size
    side = size // 8
    frames = []
    for t in range(n_frames):
        cy, cx = start + (end - start) * t / max(1, n_frames - 1)
        frame = table.copy()
        inside = (np.abs(yy - cy) < side / 2) & (np.abs(xx - cx) < side / 2)
        frame[inside] = (200, 30, 30)
        frame += rng.normal(0, 3, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames
