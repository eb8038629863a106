"""Decoding rules and the randomness behind them.

Greedy decoding compares ids. Sampling uses standard speculative sampling: a draft
token x drawn from q is accepted with probability min(1, p(x)/q(x)); on rejection
the target draws from the normalised residual max(0, p - q). That keeps the
output distribution exactly the target's p, whatever the draft.

Randomness is keyed by sequence position: the uniform numbers used at position t
are fixed by (seed, t), one stream each for the draft, the acceptance test and the
target's own draws. So a run is reproducible for a seed however the draft tree,
the threads and the timing play out, and a reused branch of the draft tree holds
exactly the tokens a fresh draft would have drawn.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decoding:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Randomness:
    """Uniform numbers per (stream, position), drawn once for the whole capacity."""

    DRAFT, ACCEPT, TARGET = 0, 1, 2

    def __init__(self, seed: int, capacity: int):
        self.u = np.random.default_rng(seed).random((3, capacity))

    def __call__(self, stream: int, position: int) -> float:
        return float(self.u[stream, position])


def distribution(logits: np.ndarray, decoding: Decoding) -> np.ndarray:
    """The sampling distribution over the last axis after temperature, top-k and top-p."""
    z = logits.astype(np.float64) / decoding.temperature
    if decoding.top_k and decoding.top_k < z.shape[-1]:
        kth = np.partition(z, -decoding.top_k, axis=-1)[..., -decoding.top_k, None]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if decoding.top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p >= decoding.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def draw(p: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from a 1-D distribution with one uniform number."""
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(p) - 1))


def verify_greedy(window: list[int], target_ids: np.ndarray) -> tuple[int, int]:
    """Accepted length A and the target's token after it (correction, or bonus if A = len(window)).

    ``target_ids[i]`` is the target's choice after the pending token and window[:i].
    """
    accepted = 0
    for token, choice in zip(window, target_ids):
        if token != choice:
            break
        accepted += 1
    return accepted, int(target_ids[accepted])


def verify_sampled(window: list[int], q: list[np.ndarray], p: np.ndarray, start: int,
                   rand: Randomness) -> tuple[int, int]:
    """Speculative sampling over a window whose first token sits at position ``start``.

    ``q[i]`` is the distribution window[i] was drawn from, ``p[i]`` the target's
    distribution at that position (``p`` has one extra row for the bonus token).
    """
    for i, token in enumerate(window):
        position = start + i
        if rand(Randomness.ACCEPT, position) * q[i][token] < p[i][token]:  # accept w.p. min(1, p/q)
            continue
        residual = np.maximum(p[i] - q[i], 0.0)
        total = residual.sum()
        return i, draw(residual / total if total > 0 else p[i], rand(Randomness.TARGET, position))
    last = len(window)
    return last, draw(p[last], rand(Randomness.TARGET, start + last))


def point_mass(token: int, vocab_size: int | None, decoding: Decoding) -> np.ndarray | None:
    """The proposal distribution of a guessed token (prompt lookup): all mass on it. None when greedy."""
    if decoding.greedy:
        return None
    q = np.zeros(vocab_size)
    q[token] = 1.0
    return q


def verify(window, target_out: np.ndarray, start: int, decoding: Decoding, rand: Randomness) -> tuple[int, int]:
    """Accepted length and next token for a window, from the suffix's next ids (greedy) or logits."""
    if decoding.greedy:
        return verify_greedy(window.tokens, target_out)
    return verify_sampled(window.tokens, window.q, distribution(target_out, decoding), start, rand)
