"""The reduced draft vocabulary: which V' target ids the draft's LM head scores.

A small draft spends most of its time in the LM head (SmolLM2: 576 x 49152, more
than eight of its decoder layers), yet the target's output concentrates on a few
thousand tokens. The draft keeps the full input embedding (it must read any
token) and scores only the V' ids the target is most likely to emit; a token
outside them is simply never proposed, which costs acceptance, not correctness.
"""

import torch

from .data import Continuation


def reduced_vocabulary(data: list[Continuation], size: int, vocab_size: int, always: list[int]) -> list[int]:
    """``size`` target ids in ascending order: ``always`` (end-of-turn and other ids the
    runtime relies on), then the ids with the largest expected count under the
    target's own next-token distributions in ``data``, then the lowest ids (a BPE
    vocabulary numbers its most common merges first)."""
    if not 1 <= size <= vocab_size:
        raise ValueError(f"draft vocabulary size {size} is outside 1..{vocab_size}")
    mass = torch.zeros(vocab_size, dtype=torch.float64)
    for c in data:
        mass.index_add_(0, c.topk_ids.reshape(-1), c.topk_logprobs.exp().reshape(-1).double())
    mass[torch.tensor(always, dtype=torch.long)] = float("inf")
    # Stable sort by descending mass keeps ascending ids among ties (the never-seen ids).
    chosen = torch.sort(-mass, stable=True).indices[:size]
    return sorted(chosen.tolist())


def draft_index(vocab_map: list[int] | None, vocab_size: int) -> torch.Tensor:
    """Target id -> draft index, -1 where the draft cannot propose the id."""
    if vocab_map is None:
        return torch.arange(vocab_size)
    index = torch.full((vocab_size,), -1, dtype=torch.long)
    index[torch.tensor(vocab_map)] = torch.arange(len(vocab_map))
    return index
