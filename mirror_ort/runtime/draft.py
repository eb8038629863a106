"""The draft model: serial proposals, several tokens per call when it has stream heads.

Cache invariant: the draft cache holds a prefix of (committed tokens + the current
window); whatever is missing is fed at the start of the next call, so rollback is
only ever a truncation.
"""

from dataclasses import dataclass, field

import numpy as np

from .masks import causal_mask, positions
from .sampling import Decoding, Randomness, distribution, draw
from .session import GraphSession
from .stats import Stats


@dataclass
class Window:
    """Draft tokens to verify, and (when sampling) the distribution each was drawn from."""

    tokens: list[int] = field(default_factory=list)
    q: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def head(self, n: int) -> "Window":
        return Window(self.tokens[:n], self.q[:n])


class Drafter:
    def __init__(self, session: GraphSession, decoding: Decoding, rand: Randomness | None, vocab_size: int,
                 stats: Stats, vocab_map: np.ndarray | None = None):
        self.session, self.decoding, self.rand, self.stats = session, decoding, rand, stats
        self.cache = session.cache
        self.streams = session.spec.streams
        self.vocab_size = vocab_size
        self.vocab_map = vocab_map  # draft vocabulary index -> target id (reduced-vocabulary drafts)

    def run(self, tokens, position_ids, mask, rows: list[int]) -> dict:
        """One forward pass over new positions; the heads run on ``rows`` only."""
        if self.decoding.greedy:
            names = ("next_ids", "stream_ids") if self.streams else ("next_ids",)
        else:
            names = ("logits", "stream_logits") if self.streams else ("logits",)
        self.stats.draft_calls += 1
        return self.session.run(np.asarray(tokens, dtype=np.int64)[None], position_ids, mask,
                                np.asarray(rows, dtype=np.int64), outputs=names)

    def proposals(self, out: dict, row: int, position: int, limit: int) -> Window:
        """Up to ``limit`` tokens proposed by one head row of a forward pass: the main head's
        token at ``position``, then each stream's at the following positions."""
        if self.decoding.greedy:
            ids = [int(out["next_ids"][0, row])]
            if self.streams:
                ids += [int(t) for t in out["stream_ids"][0, row]]
            return Window(ids[:limit])
        rows = [out["logits"][0, row]]
        if self.streams:
            rows += list(out["stream_logits"][0, row])
        window = Window()
        for j, logits in enumerate(rows[:limit]):
            q = distribution(logits, self.decoding)
            index = draw(q, self.rand(Randomness.DRAFT, position + j))
            window.tokens.append(int(self.vocab_map[index]) if self.vocab_map is not None else index)
            window.q.append(self._to_target_vocab(q))
        return window

    def _to_target_vocab(self, q: np.ndarray) -> np.ndarray:
        if self.vocab_map is None:
            return q
        full = np.zeros(self.vocab_size)
        full[self.vocab_map] = q
        return full

    def prefill(self, tokens: list[int]) -> None:
        """Feed tokens the cache lacks (the prompt), proposing nothing."""
        feed = tokens[self.cache.length:]
        if feed:
            start = self.cache.length
            self.run(feed, positions(start, len(feed)), causal_mask(start, len(feed)), rows=[])

    def propose(self, committed: list[int], gamma: int) -> Window:
        """Draft ``gamma`` tokens after ``committed``, feeding whatever the cache lacks first."""
        window = Window()
        feed = committed[self.cache.length:]
        with self.stats.timed("draft"):
            while len(window) < gamma:
                start = self.cache.length
                out = self.run(feed, positions(start, len(feed)), causal_mask(start, len(feed)), rows=[len(feed) - 1])
                chunk = self.proposals(out, 0, start + len(feed), gamma - len(window))
                window.tokens += chunk.tokens
                window.q += chunk.q
                self.stats.serial_draft_calls += 1
                self.stats.draft_tokens += len(chunk)
                feed = chunk.tokens
        return window

    def rollback(self, committed_length: int, window: Window, accepted: int) -> None:
        """Keep the cache positions that the target confirmed."""
        self.cache.truncate(committed_length + accepted)
