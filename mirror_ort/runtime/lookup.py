"""Prompt-lookup drafting: the window is what followed the last n-gram's earlier occurrence.

Summaries, extraction and reading tasks copy spans of their input, and code and lists repeat
themselves: if the last ``n`` committed tokens appeared before (in the prompt or the text so
far), the tokens that followed them then are a free guess at what follows now (no model call).
The longest n-gram (``MAX_NGRAM`` down to ``MIN_NGRAM``) with the most recent earlier match wins.
Even one token's match is worth a guess: on a target that scores two rows per step anyway
(``target.py``) it is verified in the row that would have been filler, and on SmolLM2's answers
to SpecBench summaries and RAG prompts it is right 23% of the time (``docs/lookup_by_match.py``).
The guess is verified like any draft window, so the output stays the target's; as a sampling
proposal it is a point mass (q = 1 on the guessed token).
"""

import numpy as np

MAX_NGRAM = 4
MIN_NGRAM = 1  # with auto windows each match length learns its own, and a lone guess often rides free
FIXED_MIN_NGRAM = 2  # a fixed window (every step that long) is worth only a match of two tokens or more
LONG_MATCH = 3  # with a fixed window, a match at least this long goes before the model draft


class PromptLookup:
    def __init__(self, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, tokens: list[int], limit: int) -> tuple[list[int], int]:
        """Up to ``limit`` tokens after the latest earlier match of the longest suffix n-gram of
        ``tokens``, and that n (0 and no tokens when nothing matches)."""
        if limit <= 0 or len(tokens) < self.min_ngram + 1:
            return [], 0
        seq = np.asarray(tokens)
        # every match ends with the last token: find its earlier occurrences once, then keep
        # those preceded by the rest of the n-gram, longest n first
        ends = np.flatnonzero(seq[:-1] == seq[-1])
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            hits = ends[ends >= n - 1]
            for back in range(1, n):
                hits = hits[seq[hits - back] == seq[-1 - back]]
            if hits.size:
                start = int(hits[-1]) + 1
                return tokens[start:start + limit], n
        return [], 0
