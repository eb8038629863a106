"""The target, split at the early exit: prefix (layers [0, l_e) + Top-kappa) and suffix.

Cache invariant between steps: both halves hold K/V for every committed token but
the last (the pending token, which the next window starts with).

Target-only decoding and every verification window must compute each row bit for bit
alike, at every precision (tests/test_runtime.py checks it). ONNX Runtime's CPU kernels take
another path for a single row in attention (a GEMV instead of the GEMM), so a token scored
alone would differ in its last bits from the same token scored inside a window: enough, once
int4 graphs round activations to int8, to change the output. The exported graphs mostly
see to it themselves (``one_row_exact``): fp32 graphs attend with grouped products on which a
lone token is several rows (export/grouped_attention.py), quantized graphs pad their attention
by one query row; a lone token then costs one row everywhere else. For the rest (fp16, layers
that slide, older bundles) a one-token call gets a filler row after it, and a lone head row is
asked for twice. The extra K/V land past the cache length and the next call overwrites them.
"""

from dataclasses import dataclass

import numpy as np

from .masks import causal_mask, positions
from .session import GraphSession
from .stats import Stats

NO_ROWS = np.zeros(0, dtype=np.int64)
FILLER_ROWS = 1  # cache positions a call may write past its window (see the module docstring)
# A prompt is prefilled in windows of at most this many positions: a window's attention scores
# every row against every position up to the window's end, so one square window of a long
# prompt computes twice the products a causal pass needs (the masked half). Bit for bit the same
# K/V and logits (every row computes alike whatever the window); a 660-token prompt prefills in
# 0.85 s instead of 0.93-1.04 s on the fp32 grouped attention (export/grouped_attention.py).
PREFILL_WINDOW = 256


@dataclass
class ExitMessage:
    """The early-exit message: per window position, the prefix's Top-kappa ids and log-probs.
    This is all that leaves the target for the draft: ids and log-probs, never hidden states."""

    start: int  # position of the first row (the pending token)
    ids: np.ndarray  # [rows, kappa]
    logprobs: np.ndarray


class Target:
    """Prefix and suffix as Mirror-SD runs them, and (when the pipeline fused them,
    ``runtime/fused.py``) the whole target in one session for steps that send no exit message.
    All sessions share one K/V memory; their lengths move together."""

    def __init__(self, prefix: GraphSession, suffix: GraphSession, stats: Stats, fused: GraphSession | None = None):
        self.prefix_session, self.suffix_session, self.fused_session = prefix, suffix, fused
        self.stats = stats
        self._caches = [s.cache for s in (prefix, suffix, fused) if s is not None]
        self.min_rows = 1 if prefix.spec.one_row_exact and suffix.spec.one_row_exact else 1 + FILLER_ROWS
        # A lone token sees every position, and GroupQueryAttention graphs (the BNSH-shared cache) are
        # causal by themselves and read only the mask's width: those get zeros of the mask's shape,
        # a view of one buffer, instead of a mask built per call.
        self._width_only = all(s.mask_width_only for s in (prefix, suffix, fused) if s is not None)
        self._zeros = np.zeros(0, dtype=np.float32)

    @property
    def length(self) -> int:
        return self.suffix_session.cache.length

    def reset(self) -> None:
        self._set_length(0)

    def truncate(self, length: int) -> None:
        """Roll back after a rejection: a length, not a copy."""
        self._set_length(min(self.length, length))

    def _set_length(self, length: int) -> None:
        for cache in self._caches:
            cache.length = length

    def prefix(self, tokens: list[int], kappa: int | None = None, timer: str = "prefix"):
        """Layers [0, l_e) over new tokens; returns the hidden state and the early-exit message."""
        start, self._rows = self.length, len(tokens)
        tokens, self._window = self._padded(start, tokens)
        exit_rows = np.arange(self._rows, dtype=np.int64) if kappa else NO_ROWS  # for Mirror-SD's draft alone
        with self.stats.timed(timer):
            out = self.prefix_session.run(tokens, *self._window, exit_rows,
                                          outputs=("hidden", "exit_ids", "exit_logprobs") if kappa else ("hidden",))
        self.prefix_session.cache.length = start + self._rows
        message = None
        if kappa:
            message = ExitMessage(start, out["exit_ids"][0, :, :kappa].copy(), out["exit_logprobs"][0, :, :kappa].copy())
        return out["hidden"], message

    def suffix(self, hidden, greedy: bool, timer: str = "suffix", last_only: bool = False) -> np.ndarray:
        """Layers [l_e, N) + head on the window the prefix just ran: next ids, or logits to sample from
        (every row, or only the last one)."""
        start, rows = self.suffix_session.cache.length, self._rows
        out = self._head(self.suffix_session, hidden, self._window, rows, greedy, last_only, timer)
        self._set_length(start + rows)
        return out

    def score(self, tokens: list[int], greedy: bool, prefill: bool = False, last_only: bool = True) -> np.ndarray:
        """The whole target without the early-exit message: its output for the last token
        (target-only decoding, prefill) or for every token (verifying a window)."""
        self.stats.target_calls += 1
        while prefill and len(tokens) > PREFILL_WINDOW:
            self._extend(tokens[:PREFILL_WINDOW])
            tokens = tokens[PREFILL_WINDOW:]
        if self.fused_session is None:
            hidden, _ = self.prefix(tokens, timer="prefill" if prefill else "prefix")
            return self.suffix(hidden, greedy, timer="prefill" if prefill else "suffix", last_only=last_only)
        start = self.length
        ids, window = self._padded(start, tokens)
        out = self._head(self.fused_session, ids, window, len(tokens), greedy, last_only,
                         "prefill" if prefill else "target")
        self._set_length(start + len(tokens))
        return out

    def _extend(self, tokens: list[int]) -> None:
        """Write the K/V of ``tokens`` (a prompt's window but its last), no head on any row."""
        start = self.length
        ids, window = self._padded(start, tokens)
        with self.stats.timed("prefill"):
            if self.fused_session is not None:
                self.fused_session.run(ids, *window, NO_ROWS)
            else:
                hidden = self.prefix_session.run(ids, *window, NO_ROWS, outputs=("hidden",))["hidden"]
                self.suffix_session.run(hidden, *window, NO_ROWS)
        self._set_length(start + len(tokens))

    def _padded(self, start: int, tokens: list[int]):
        """The window's ids (a filler row after a lone token where needed, see above), positions, mask."""
        tokens = list(tokens) + [tokens[-1]] * (self.min_rows - len(tokens))
        return np.array([tokens], dtype=np.int64), (positions(start, len(tokens)), self._mask(start, len(tokens)))

    def _mask(self, start: int, rows: int) -> np.ndarray:
        if rows > 1 and not self._width_only:
            return causal_mask(start, rows)
        size = rows * (start + rows)
        if self._zeros.size < size:
            self._zeros = np.zeros(max(size, 2 * self._zeros.size), dtype=np.float32)
        return self._zeros[:size].reshape(1, 1, rows, start + rows)

    def _head(self, session: GraphSession, first, window, rows: int, greedy: bool, last_only: bool, timer: str):
        """Run a graph that ends in the LM head (the suffix, the fused target) over the window: next
        ids, or logits, of every row or only the last (a lone head row is asked twice, see above)."""
        wanted = np.arange(rows - 1 if last_only else 0, rows, dtype=np.int64)
        head_rows = wanted if len(wanted) >= self.min_rows else np.resize(wanted, self.min_rows)
        with self.stats.timed(timer):
            out = session.run(first, *window, head_rows, outputs=("next_ids",) if greedy else ("logits",))
        return out["next_ids" if greedy else "logits"][0, :len(wanted)]
