"""Additive attention masks: causal windows for the target, tree masks for the draft tree."""

import numpy as np

MASKED = np.float32(-1e9)


def causal_mask(past: int, seq: int) -> np.ndarray:
    """[1, 1, seq, past + seq]: every new position sees the cache and the new positions up to itself."""
    mask = np.zeros((1, 1, seq, past + seq), dtype=np.float32)
    mask[0, 0, :, past:] = np.triu(np.full((seq, seq), MASKED, dtype=np.float32), 1)
    return mask


def positions(start: int, seq: int) -> np.ndarray:
    return np.arange(start, start + seq, dtype=np.int64)[None]
