"""How long a draft window to verify: chosen each step to maximise committed tokens per second.

A window of g draft tokens commits A + 1 tokens (A accepted, then the target's own), where A is
the accepted prefix. With a_j the chance that position j is accepted given all before it were,
    E[tokens | g] = 1 + a_0 + a_0 a_1 + ... + a_0 ... a_{g-1}
and the step costs the target's time for g + 1 rows (measured: ``cost.CostCurve``) plus the
draft's: ceil(g / tokens_per_call) serial draft calls, or, in Mirror-SD, what the draft added
to the step as measured. g = 0 is a plain target step, so when nothing pays the method decodes
like ``ar`` and costs no more. The a_j are running estimates per window position (the stream
heads' later positions are worse than the main head's first): counts that fade (``DECAY`` per
observation, so the estimate follows the text), shrunk towards the position before (a position
not tried yet is expected to do as its predecessor does, until it is tried). So the controller
adapts to the draft, the text and the device; every ``PROBE_EVERY`` steps it tries one token
more than pays, so that a position the estimates gave up on (a draft that starts to agree in a
repetitive passage, a stream head better than it first looked) is measured again.

With greedy decoding the output never depends on the windows, so the controller also follows
the draft's cost as measured step by step (and, in Mirror-SD, what waiting for the draft added).
When sampling, a seed must reproduce its run, so the decisions follow only the cost curve
measured once for the machine and the acceptance counts, which the tokens determine.

``best_window`` is the pure decision; ``WindowController`` keeps the estimates.
"""

import math
from dataclasses import dataclass, field

from .lookup import FIXED_MIN_NGRAM, LONG_MATCH, MAX_NGRAM, MIN_NGRAM, PromptLookup

PROBE_EVERY = 16  # steps between windows one token longer than the estimates choose
PRIOR = 0.5  # the first position's acceptance before any evidence
SHRINK = 2.0  # weight, in observations, of the position before as the prior of a position
DECAY = 0.98  # fading of the acceptance counts per observation (a memory of about 50)
EMA = 0.2  # weight of the newest measurement in the running draft-cost estimates


def expected_tokens(acceptance: list[float], gamma: int) -> float:
    """E[committed tokens] for a window of ``gamma`` given per-position acceptance."""
    total, reach = 1.0, 1.0
    for j in range(gamma):
        reach *= acceptance[j]
        total += reach
    return total


def best_window(acceptance: list[float], target_ms, draft_ms_per_call: float, tokens_per_call: int,
                max_gamma: int, overhead_ms: float = 0.0) -> int:
    """The window length in 0..max_gamma with the most expected tokens per millisecond.

    ``target_ms(rows)``: the target's time to score that many rows; ``overhead_ms``: what a
    speculative step costs beyond the target and the serial draft calls (Mirror-SD's waits)."""
    return max(range(max_gamma + 1), key=lambda g: (
        window_rate(acceptance, g, target_ms, draft_ms_per_call, tokens_per_call, overhead_ms), -g))


def window_rate(acceptance: list[float], gamma: int, target_ms, draft_ms_per_call: float, tokens_per_call: int,
                overhead_ms: float = 0.0) -> float:
    """Expected committed tokens per millisecond of a step that verifies ``gamma`` draft tokens."""
    if gamma == 0:
        return 1.0 / target_ms(1)
    calls = math.ceil(gamma / tokens_per_call)
    return expected_tokens(acceptance, gamma) / (target_ms(gamma + 1) + calls * draft_ms_per_call + overhead_ms)


@dataclass
class WindowController:
    """``gamma='auto'``: per-position acceptance counts, the draft's measured cost, the choice."""

    target_ms: object  # rows -> ms (cost.CostCurve.target)
    draft_ms_per_call: float
    tokens_per_call: int
    max_gamma: int
    follow_timing: bool = True  # update the draft's cost from what each step measured (greedy only)
    accepted: list[float] = field(default_factory=list)
    trials: list[float] = field(default_factory=list)
    overhead_ms: float = 0.0
    steps: int = 0
    chosen: list[int] = field(default_factory=list)
    _best: dict = field(default_factory=dict, init=False, repr=False)  # room -> (window, its rate), until the next observation

    def __post_init__(self):
        self.accepted = [0.0] * self.max_gamma
        self.trials = [0.0] * self.max_gamma

    @property
    def acceptance(self) -> list[float]:
        out, before = [], PRIOR
        for a, t in zip(self.accepted, self.trials):
            before = (a + SHRINK * before) / (t + SHRINK)
            out.append(before)
        return out

    def choose(self, room: int) -> int:
        """The window for this step (at most ``room``: the tokens the sequence may still take - 1)."""
        limit = min(self.max_gamma, room)
        gamma = self.best(limit)
        self.steps += 1
        if self.steps % PROBE_EVERY == 0:  # look one position further than the estimates say pays
            gamma = min(gamma + 1, limit)
        self.chosen.append(gamma)
        return gamma

    def best_rate(self, room: int) -> float:
        """The expected tokens per millisecond of the best window within ``room`` (asked, not recorded)."""
        return self._best_and_rate(room)[1]

    def best(self, room: int) -> int:
        """The window that pays most within ``room`` (asked, not recorded)."""
        return self._best_and_rate(room)[0]

    def _best_and_rate(self, room: int) -> tuple[int, float]:
        """Computed once per step and room: a step may ask before it chooses (``WindowPlanner``)."""
        limit = max(0, min(self.max_gamma, room))
        if limit not in self._best:
            acceptance = self.acceptance
            gamma = best_window(acceptance, self.target_ms, self.draft_ms_per_call, self.tokens_per_call, limit,
                                self.overhead_ms) if limit > 0 else 0
            self._best[limit] = gamma, window_rate(acceptance, gamma, self.target_ms, self.draft_ms_per_call,
                                                   self.tokens_per_call, self.overhead_ms)
        return self._best[limit]

    def pays(self, gamma: int) -> bool:
        """Would a window of ``gamma`` beat the best shorter one? (Asked, not recorded as a choice.)"""
        return self.best(gamma) == gamma

    def observe(self, proposed: int, accepted: int, draft_ms_per_call: float | None = None,
                overhead_ms: float | None = None) -> None:
        """After verification: positions 0..accepted-1 were accepted, position ``accepted`` (if proposed) was not."""
        self._best.clear()
        for j in range(min(proposed, accepted + 1)):
            self.trials[j] = DECAY * self.trials[j] + 1
            self.accepted[j] = DECAY * self.accepted[j] + (j < accepted)
        if not self.follow_timing:
            return
        if draft_ms_per_call is not None:
            self.draft_ms_per_call += EMA * (draft_ms_per_call - self.draft_ms_per_call)
        if overhead_ms is not None:
            self.overhead_ms += EMA * (max(overhead_ms, 0.0) - self.overhead_ms)

    def summary(self) -> dict:
        return {**choices(self.chosen), "acceptance": [round(a, 3) for a in self.acceptance],
                "draft_ms_per_call": round(self.draft_ms_per_call, 3), "overhead_ms": round(self.overhead_ms, 3)}


def choices(chosen: list[int]) -> dict:
    """What a list of chosen windows says: their mean, and how many were plain target steps (0)."""
    return {"mean_gamma": sum(chosen) / len(chosen) if chosen else 0.0, "plain_steps": chosen.count(0)}


@dataclass
class Plan:
    source: str  # "model", "lookup" or "none" (a plain target step)
    gamma: int  # window length wanted from the model draft (source "model")
    tokens: list[int] = field(default_factory=list)  # the lookup window (source "lookup")
    match: int = 0  # the lookup's n-gram length (source "lookup")


class WindowPlanner:
    """Where each step's window comes from and how long it is.

    ``draft``: "model", "lookup" or "both". With both and auto windows, a step with a lookup
    guess verifies whichever source is expected to commit more tokens per millisecond (its
    controller's best window against the model draft's); with a fixed window, a long match
    (``LONG_MATCH`` tokens of n-gram) goes first, since it costs no draft call. A step that
    verifies no model window still verifies a one-token lookup guess when there is one and it
    pays; on a target that scores at least two rows anyway (``free_guess``, older graphs:
    ``target.py``) it always pays, riding in the row that would have been filler.
    Fixed ``gamma``: every window is that long. ``gamma="auto"``: ``WindowController`` per source,
    and for lookup one per match length: a longer n-gram match predicts further (on SmolLM2's
    SpecBench summaries and RAG answers a one-token match's guess is accepted 0.5 tokens deep on
    average, a 2-gram's 1.2, a 4-gram's 3.9), so each length learns its own windows."""

    def __init__(self, draft: str, gamma: int | None, max_gamma: int, curve, tokens_per_call: int,
                 follow_timing: bool = True, free_guess: bool = False):
        self.draft, self.gamma, self.long_match, self.free_guess = draft, gamma, LONG_MATCH, free_guess
        shortest = MIN_NGRAM if gamma is None else FIXED_MIN_NGRAM
        self.lookup = PromptLookup(min_ngram=shortest) if draft in ("lookup", "both") else None
        target_ms = curve.target if curve is not None else (lambda rows: 1.0)
        self.model = (WindowController(target_ms, curve.draft_ms or 0.0, tokens_per_call, max_gamma, follow_timing)
                      if gamma is None and draft in ("model", "both") else None)
        self.looked = ({n: WindowController(target_ms, 0.0, max_gamma, max_gamma, follow_timing)
                        for n in range(shortest, MAX_NGRAM + 1)} if gamma is None and self.lookup else None)
        self.max_gamma = max_gamma
        self.model_windows: list[int] = []  # per step where the model draft could propose: its window (0: none)

    def plan(self, tokens: list[int], room: int) -> Plan:
        """``room``: the most draft tokens this step may verify (the sequence's limits)."""
        limit = min(room, self.max_gamma)
        guess, n = self.lookup.propose(tokens, limit) if self.lookup else ([], 0)
        looked = self.looked[n] if self.looked and guess else None
        if guess and self._lookup_first(n, looked, len(guess), limit):
            length = looked.choose(len(guess)) if looked else len(guess)
            if self.free_guess and looked:
                length = looked.chosen[-1] = max(length, 1)  # the guess rides in the filler row
            if length:
                return Plan("lookup", 0, guess[:length], n)
        if self.draft in ("model", "both"):
            gamma = self.model.choose(limit) if self.model else min(self.gamma, limit)
            self.model_windows.append(gamma)
            if gamma:
                return Plan("model", gamma)
        if guess and (self.free_guess or looked is None or looked.pays(1)):
            return Plan("lookup", 0, guess[:1], n)
        return Plan("none", 0)

    def _lookup_first(self, n: int, looked: WindowController | None, guessed: int, limit: int) -> bool:
        """Does this step verify the lookup guess rather than a model window? With both sources and
        auto windows, whichever is expected to commit more tokens per millisecond (a guess costs no
        draft call; an even choice goes to it); with a fixed window, a long match."""
        if self.draft == "lookup":
            return True
        if looked is not None and self.model is not None:
            return looked.best_rate(guessed) >= self.model.best_rate(limit)
        return n >= self.long_match

    def observe(self, plan: Plan, proposed: int, accepted: int, draft_ms_per_call: float | None = None,
                overhead_ms: float | None = None) -> None:
        controller = (self.model if plan.source == "model"
                      else self.looked[plan.match] if plan.source == "lookup" and self.looked else None)
        if controller is not None:
            controller.observe(proposed, accepted, draft_ms_per_call, overhead_ms)

    def summary(self) -> dict:
        out = {"gamma": "auto" if self.model or self.looked else self.gamma, "draft": self.draft,
               "mean_model_window": sum(self.model_windows) / len(self.model_windows) if self.model_windows else None}
        if self.model:
            out["model"] = self.model.summary()
        if self.looked:
            out["lookup"] = {**choices([g for c in self.looked.values() for g in c.chosen]),
                             "by_match": {n: {"steps": len(c.chosen), **c.summary()} for n, c in self.looked.items()}}
        return out
