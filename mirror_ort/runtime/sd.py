"""Vanilla speculative decoding: draft gamma tokens serially, verify them in one target call.

The draft and the target take turns, so on two devices one is always idle: the
serial barrier that Mirror-SD removes.
"""

from .ar import prefill
from .draft import Window
from .sampling import verify


def generate_sd(target, drafter, seq, decoding, rand, stats, gamma: int):
    yield prefill(target, seq, decoding, rand)
    while not seq.done:
        n = len(seq.tokens)
        gamma_now = seq.window_size(gamma)
        window = drafter.propose(seq.tokens, gamma_now) if gamma_now else Window()
        out = target.score([seq.tokens[-1]] + window.tokens, decoding.greedy, last_only=False)
        accepted, token = verify(window, out, n, decoding, rand)
        target.truncate(n + accepted)
        drafter.rollback(n, window, accepted)
        stats.accepted_draft_tokens += accepted
        yield seq.commit(window.tokens[:accepted] + [token])
