"""Branch-complete rollouts: the draft tree that Mirror-SD builds while the target suffix runs.

Tree shape (the paper leaves it open). A branch is a hypothesis about the step's
outcome: the target accepts the first ``depth`` window tokens, then emits
``token`` (a correction when depth < gamma, the bonus token when depth = gamma).
Candidates for every depth come from the early-exit Top-kappa at that position,
minus the window's own token (which would have been accepted, not corrected).
Each branch is scored by the log-probability of that outcome:
    depth * log(a) + log(1 - a) [if depth < gamma] + log p_exit(token at depth)
where ``a`` is the draft's running per-token acceptance rate (where the target
stops) and p_exit the early-exit proxy (what it says there). The
``max_branches`` best are rolled out gamma tokens deep. The acceptance rate
matters: with a good draft most steps accept everything, and the tree must
hold the bonus tokens; with a poor one the early corrections matter most.

Batching. The branches share the draft cache: each tree level is one draft call
with batch 1 whose new positions are the branches' next tokens, and an additive
tree mask lets each position see only its own context (committed tokens, its
window prefix, its own rollout). Window tokens not yet in the draft cache are fed
once as a shared chain in the first call.

Pruning. Between levels the draft checks for the target's verdict. Once it is
known, only the matching branch keeps rolling out (or, if no branch matches,
the tree is abandoned for a fresh draft: the fallback).

Cache bookkeeping. Tree nodes are appended after the draft cache's valid
prefix. On reuse the chosen branch's nodes (a few rows) are moved right after
the accepted prefix; other branches are forgotten by truncation.
"""

from dataclasses import dataclass, field

import numpy as np

from .draft import Drafter, Window
from .masks import MASKED
from .target import ExitMessage


@dataclass
class Branch:
    depth: int  # accepted window tokens this branch assumes
    token: int  # the target's next token after them
    score: float
    base: int = 0  # cache positions [0, base) are its context, in order
    slots: list[int] = field(default_factory=list)  # then these cache slots, in order
    rollout: Window = field(default_factory=Window)  # the next window if this branch is taken
    unfed: list[int] = field(default_factory=list)  # proposed tokens whose K/V is not cached yet


def plan(window: list[int], message: ExitMessage, max_branches: int, acceptance: float) -> list[Branch]:
    """The ``max_branches`` most likely (depth, token) outcomes of this step."""
    log_accept, log_reject = np.log(acceptance), np.log1p(-acceptance)
    candidates = []
    for depth in range(len(window) + 1):
        where = depth * log_accept + (log_reject if depth < len(window) else 0.0)
        for token, lp in zip(message.ids[depth].tolist(), message.logprobs[depth].tolist()):
            if depth < len(window) and token == window[depth]:
                continue
            candidates.append(Branch(depth, token, where + lp))
    candidates.sort(key=lambda b: -b.score)
    return candidates[:max_branches]


class DraftTree:
    """Rolls out a set of branches level by level on the draft's cache."""

    def __init__(self, drafter: Drafter, committed_length: int, window: Window, branches: list[Branch], gamma: int):
        self.drafter, self.n, self.window, self.gamma = drafter, committed_length, window, gamma
        cache = drafter.cache
        self.cached = min(cache.length - self.n, len(window))  # window tokens already in the cache
        cache.truncate(self.n + self.cached)
        self.branches = {(b.depth, b.token): b for b in branches}
        self.active = list(branches)
        self.chain: list[int] = []  # slots of window tokens fed by the tree
        for b in branches:
            b.base = self.n + min(b.depth, self.cached)

    @property
    def finished(self) -> bool:
        return all(len(b.rollout) >= self.gamma for b in self.active)

    def prune(self, depth: int, token: int) -> Branch | None:
        """Keep rolling out only the branch the target took; None if the tree missed it."""
        chosen = self.branches.get((depth, token))
        self.active = [chosen] if chosen else []
        return chosen

    def level(self) -> None:
        """One draft call that advances every active branch by one chunk of tokens."""
        cache = self.drafter.cache
        start = cache.length
        tokens, pos, visible, rows = [], [], [], []

        def node(token: int, position: int, context: tuple[int, list[int]]) -> int:
            slot = start + len(tokens)
            tokens.append(token)
            pos.append(position)
            visible.append((context[0], context[1] + [slot]))
            return slot

        if not self.chain:  # first level: shared chain of uncached window tokens, then the roots
            deepest = max((b.depth for b in self.active), default=0)
            for i in range(self.cached, deepest):
                self.chain.append(node(self.window.tokens[i], self.n + i, (self.n + self.cached, list(self.chain))))
            for b in self.active:
                b.slots = self.chain[: max(0, b.depth - self.cached)]
                b.unfed = [b.token]
        for b in self.active:
            if len(b.rollout) >= self.gamma:
                continue
            first_position = b.base + len(b.slots)
            for j, token in enumerate(b.unfed):
                b.slots.append(node(token, first_position + j, (b.base, list(b.slots))))
            rows.append((b, len(tokens) - 1, b.base + len(b.slots)))  # the head runs on each branch's tip
        mask = np.full((1, 1, len(tokens), start + len(tokens)), MASKED, dtype=np.float32)
        for r, (base, slots) in enumerate(visible):
            mask[0, 0, r, :base] = 0.0
            mask[0, 0, r, slots] = 0.0
        out = self.drafter.run(tokens, np.array([pos], dtype=np.int64), mask, [tip for _, tip, _ in rows])
        for row, (b, _, position) in enumerate(rows):
            chunk = self.drafter.proposals(out, row, position, self.gamma - len(b.rollout))
            b.rollout.tokens += chunk.tokens
            b.rollout.q += chunk.q
            b.unfed = chunk.tokens

    def adopt(self, branch: Branch) -> Window:
        """Make the chosen branch the draft cache's valid prefix; return its rollout."""
        cache = self.drafter.cache
        cache.move(np.array(branch.slots, dtype=np.int64), branch.base)
        cache.length = branch.base + len(branch.slots)
        return branch.rollout

    def abandon(self, accepted: int) -> None:
        """Fallback: keep only the cache prefix the target confirmed."""
        fed_window = self.cached + len(self.chain)
        self.drafter.cache.truncate(self.n + min(accepted, fed_window))
