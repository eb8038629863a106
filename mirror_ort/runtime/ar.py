"""Target-only decoding: prefix then suffix per token. The reference for losslessness and speed."""

from .sampling import Randomness, distribution, draw


def next_token(out, seq, decoding, rand) -> int:
    """The target's own choice from the last row of a scored window."""
    if decoding.greedy:
        return int(out[-1])
    return draw(distribution(out[-1], decoding), rand(Randomness.TARGET, len(seq.tokens)))


def prefill(target, seq, decoding, rand) -> list[int]:
    """Score the prompt (what the target caches lack of it) in one window; commit the first new token."""
    out = target.score(seq.tokens[target.length:], decoding.greedy, prefill=True)
    return seq.commit([next_token(out, seq, decoding, rand)])


def generate_ar(target, seq, decoding, rand, stats):
    """Yield committed tokens, one target call each."""
    kept = prefill(target, seq, decoding, rand)
    yield kept
    while not seq.done:
        kept = seq.commit([next_token(target.score(seq.tokens[-1:], decoding.greedy), seq, decoding, rand)])
        yield kept
