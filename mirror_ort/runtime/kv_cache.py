"""K/V caches as preallocated buffers: appending is a bound write, rollback is a length.

One float32 buffer [layers, 2, capacity, kv_heads, head_dim] per graph. With batch 1
the first ``length`` positions of a layer's key (or value) are one contiguous block,
so the graph reads its past straight from the buffer and writes the new positions
straight after it through I/O binding: no concatenation, no copy of the cache.
"""

import numpy as np


class KVCache:
    def __init__(self, num_layers: int, capacity: int, num_kv_heads: int, head_dim: int):
        self.capacity = capacity
        self.row_shape = (num_kv_heads, head_dim)
        self.buffer = np.zeros((num_layers, 2, capacity, num_kv_heads, head_dim), dtype=np.float32)
        self.length = 0  # positions [0, length) hold valid K/V

    def rows(self, layer: int, kind: int, start: int, stop: int) -> np.ndarray:
        """A contiguous [1, stop - start, H, D] view of one layer's keys (kind 0) or values (1)."""
        return self.buffer[layer, kind, start:stop][None]

    def truncate(self, length: int) -> None:
        """Roll back to ``length`` valid positions (after a rejection): bookkeeping only."""
        self.length = min(self.length, length)

    def move(self, sources: np.ndarray, destination: int) -> None:
        """Copy positions ``sources`` (scattered, e.g. one branch of the draft tree) to
        ``destination`` .. ``destination + len(sources)``: a gather of a few rows."""
        n = len(sources)
        self.buffer[:, :, destination:destination + n] = self.buffer[:, :, sources]
