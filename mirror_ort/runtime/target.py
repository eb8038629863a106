"""The target, split at the early exit: prefix (layers [0, l_e) + Top-kappa) and suffix.

Cache invariant between steps: both halves hold K/V for every committed token but
the last (the pending token, which the next window starts with).
"""

from dataclasses import dataclass

import numpy as np

from .masks import causal_mask, positions
from .session import GraphSession
from .stats import Stats

NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass
class ExitMessage:
    """The early-exit message: per window position, the prefix's Top-kappa ids and log-probs.
    This is all that leaves the target for the draft: ids and log-probs, never hidden states."""

    start: int  # position of the first row (the pending token)
    ids: np.ndarray  # [rows, kappa]
    logprobs: np.ndarray


class Target:
    def __init__(self, prefix: GraphSession, suffix: GraphSession, stats: Stats):
        self.prefix_session, self.suffix_session, self.stats = prefix, suffix, stats

    @property
    def length(self) -> int:
        return self.suffix_session.cache.length

    def reset(self) -> None:
        self.prefix_session.cache.length = self.suffix_session.cache.length = 0

    def truncate(self, length: int) -> None:
        """Roll back both halves after a rejection: a length, not a copy."""
        self.prefix_session.cache.truncate(length)
        self.suffix_session.cache.truncate(length)

    def prefix(self, tokens: list[int], kappa: int | None = None, timer: str = "prefix"):
        """Layers [0, l_e) over new tokens; returns the hidden state and the early-exit message."""
        start, seq = self.length, len(tokens)
        self._window = (positions(start, seq), causal_mask(start, seq))
        exit_rows = None if kappa else NO_ROWS  # the early exit is for Mirror-SD's draft alone
        with self.stats.timed(timer):
            out = self.prefix_session.run(np.array([tokens], dtype=np.int64), *self._window, exit_rows,
                                          outputs=("hidden", "exit_ids", "exit_logprobs") if kappa else ("hidden",))
        message = None
        if kappa:
            message = ExitMessage(start, out["exit_ids"][0, :, :kappa].copy(), out["exit_logprobs"][0, :, :kappa].copy())
        return out["hidden"], message

    def suffix(self, hidden, greedy: bool, timer: str = "suffix", last_only: bool = False) -> np.ndarray:
        """Layers [l_e, N) + head on the window the prefix just ran: next ids, or logits to sample from
        (every row, or only the last one)."""
        rows = np.array([hidden.shape[1] - 1], dtype=np.int64) if last_only else None
        with self.stats.timed(timer):
            out = self.suffix_session.run(hidden, *self._window, rows,
                                          outputs=("next_ids",) if greedy else ("logits",))
        return out["next_ids"][0] if greedy else out["logits"][0]

    def score(self, tokens: list[int], greedy: bool, prefill: bool = False, last_only: bool = True) -> np.ndarray:
        """Prefix then suffix without the early-exit message: the target's output for the last
        token (target-only decoding, prefill) or for every token (verifying a window)."""
        self.stats.target_calls += 1
        hidden, _ = self.prefix(tokens, timer="prefill" if prefill else "prefix")
        return self.suffix(hidden, greedy, timer="prefill" if prefill else "suffix", last_only=last_only)
