"""K/V caches as preallocated buffers: appending is a bound write, rollback is a length.

One float32 buffer per graph, in the graph's layout (``kv_layout`` in the manifest):

* ``BSND`` (the draft): [layers, 2, capacity, kv_heads, head_dim]. With batch 1 the first
  ``length`` positions of a layer's key (or value) are one contiguous block, so the graph
  reads its past straight from the buffer and writes the new positions straight after it.
* ``BSND-shared`` (the target, export/grouped_attention.py): the draft's buffer, but each
  layer's first W positions (W a little past the length, see GraphSession) are bound as
  [W, 1, kv_heads, head_dim], as both past and present; the graph writes the new positions
  in place at their indices and reads the rest where it lies.
* ``BNSH-shared`` (targets that keep GroupQueryAttention): [layers, 2, 1, kv_heads, capacity,
  head_dim]. Each layer's key (or value) is bound once, whole, as both past and present;
  GroupQueryAttention writes the new positions in place after the valid ones.

Either way: no concatenation, no copy of the cache, and rollback is bookkeeping.
"""

import numpy as np


class KVCache:
    def __init__(self, num_layers: int, capacity: int, num_kv_heads: int, head_dim: int, layout: str = "BSND"):
        self.capacity = capacity
        shape = (1, num_kv_heads, capacity, head_dim) if layout == "BNSH-shared" else (capacity, num_kv_heads, head_dim)
        self.buffer = np.zeros((num_layers, 2) + shape, dtype=np.float32)
        self.length = 0  # positions [0, length) hold valid K/V

    def layers(self, start: int, stop: int) -> "KVCache":
        """Layers [start, stop) as a cache of their own over the same memory (a half of the target
        reads and writes what the fused target does, runtime/fused.py); its length is its own."""
        view = KVCache.__new__(KVCache)
        view.capacity, view.buffer, view.length = self.capacity, self.buffer[start:stop], self.length
        return view

    def rows(self, layer: int, kind: int, start: int, stop: int) -> np.ndarray:
        """A contiguous [1, stop - start, H, D] view of one layer's keys (kind 0) or values (1) (BSND)."""
        return self.buffer[layer, kind, start:stop][None]

    def first(self, layer: int, kind: int, width: int) -> np.ndarray:
        """One layer's first ``width`` positions of keys (kind 0) or values (1) as [width, 1, H, D] (BSND-shared)."""
        block = self.buffer[layer, kind, :width]
        return block.reshape(width, 1, *block.shape[1:])

    def whole(self, layer: int, kind: int) -> np.ndarray:
        """One layer's whole [1, H, capacity, D] key (kind 0) or value (1) buffer (BNSH-shared)."""
        return self.buffer[layer, kind]

    def truncate(self, length: int) -> None:
        """Roll back to ``length`` valid positions (after a rejection): bookkeeping only."""
        self.length = min(self.length, length)

    def move(self, sources: np.ndarray, destination: int) -> None:
        """Copy positions ``sources`` (scattered, e.g. one branch of the draft tree) to
        ``destination`` .. ``destination + len(sources)``: a gather of a few rows (BSND)."""
        n = len(sources)
        self.buffer[:, :, destination:destination + n] = self.buffer[:, :, sources]
