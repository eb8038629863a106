"""The window controller (``runtime/window.py``) and prompt lookup (``runtime/lookup.py``), on
synthetic acceptance streams: a pure function, so no model is needed to test what it decides."""

import random
from types import SimpleNamespace

import pytest

from mirror_ort.runtime.lookup import PromptLookup
from mirror_ort.runtime.window import (
    WindowController,
    WindowPlanner,
    best_window,
    expected_tokens,
)


def target_ms(rows: int) -> float:
    """A CPU-like cost curve: a window of 8 costs about 1.4 single steps (measured shapes on 2 cores)."""
    return 10.0 + 0.6 * max(rows - 2, 0)


DRAFT_MS = 1.5  # a draft call: 15% of a target step


def step_ms(gamma: int) -> float:
    return target_ms(gamma + 1) + DRAFT_MS * gamma if gamma else target_ms(1)


def best_fixed(acceptance, max_gamma=8) -> tuple[int, float]:
    rates = {g: expected_tokens(acceptance, g) / step_ms(g) for g in range(max_gamma + 1)}
    g = max(rates, key=rates.get)
    return g, rates[g]


def simulate(acceptance, steps=3000, seed=0, max_gamma=8) -> tuple[float, WindowController]:
    """Tokens per ms the controller reaches when position j is accepted with probability acceptance[j]."""
    rng = random.Random(seed)
    controller = WindowController(target_ms, DRAFT_MS, tokens_per_call=1, max_gamma=max_gamma)
    tokens = ms = 0.0
    for _ in range(steps):
        gamma = controller.choose(room=max_gamma)
        accepted = 0
        while accepted < gamma and rng.random() < acceptance[accepted]:
            accepted += 1
        controller.observe(gamma, accepted, draft_ms_per_call=DRAFT_MS)
        tokens += accepted + 1
        ms += step_ms(gamma)
    return tokens / ms, controller


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.85, 0.95])
def test_auto_gamma_reaches_the_best_fixed_window(rate):
    acceptance = [rate] * 8
    best_gamma, best_rate = best_fixed(acceptance)
    reached, controller = simulate(acceptance)
    assert reached >= 0.97 * best_rate, (rate, best_gamma, reached / best_rate, controller.summary())


def test_acceptance_that_falls_with_the_position_is_learned_per_position():
    """A main head then stream heads: position 0 is good, later positions much worse."""
    acceptance = [0.8, 0.45, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2]
    _, best_rate = best_fixed(acceptance)
    reached, controller = simulate(acceptance)
    assert reached >= 0.97 * best_rate
    assert controller.acceptance[0] == pytest.approx(0.8, abs=0.12)  # a fading memory of about 50 steps


def test_a_draft_that_never_agrees_turns_speculation_off():
    reached, controller = simulate([0.0] * 8)
    plain_rate = 1 / target_ms(1)
    assert reached >= 0.97 * plain_rate
    summary = controller.summary()
    assert summary["plain_steps"] >= 0.9 * len(controller.chosen)
    assert 0 < summary["mean_gamma"] < 0.1  # only the periodic one-token probes


def test_a_draft_that_starts_agreeing_is_noticed():
    """Off for a poor stretch, then the text turns repetitive: the probes bring the window back."""
    rng = random.Random(1)
    controller = WindowController(target_ms, DRAFT_MS, 1, 8)
    for phase, rate in ((0, 0.0), (1, 0.95)):
        for _ in range(1500):
            gamma = controller.choose(8)
            accepted = 0
            while accepted < gamma and rng.random() < rate:
                accepted += 1
            controller.observe(gamma, accepted)
        last = controller.chosen[-200:]
        assert (sum(last) / len(last) < 0.2) if phase == 0 else (sum(last) / len(last) > 4)


def test_best_window_extremes_and_the_room_left():
    assert best_window([0.0] * 8, target_ms, DRAFT_MS, 1, 8) == 0
    assert best_window([1.0] * 8, target_ms, DRAFT_MS, 1, 8) == 8
    assert best_window([1.0] * 8, target_ms, DRAFT_MS, 1, 3) == 3
    # a draft slower than the target never pays, however good
    assert best_window([0.6] * 8, target_ms, 50.0, 1, 8) == 0
    # stream heads: three tokens per call make longer windows cheaper
    assert best_window([0.7] * 8, target_ms, 4.0, 3, 8) > best_window([0.7] * 8, target_ms, 4.0, 1, 8)
    controller = WindowController(target_ms, DRAFT_MS, 1, 8)
    assert controller.choose(room=0) == 0 and controller.choose(room=2) <= 2


def test_prompt_lookup_proposes_what_followed_the_longest_latest_match():
    lookup = PromptLookup(max_ngram=3, min_ngram=2)
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 4, 7, 8, 1, 2, 3]
    # the suffix 1 2 3 matched at 0 (then 4 5 9); 2 3 also at 6 but the 3-gram wins
    assert lookup.propose(tokens, 3) == ([4, 5, 9], 3)
    assert lookup.propose(tokens[:-3] + [2, 3, 4], 2) == ([7, 8], 3)  # 2 3 4: its latest occurrence (6..8)
    assert lookup.propose([5, 6, 7, 8], 4) == ([], 0)  # nothing repeats
    assert lookup.propose(tokens, 0) == ([], 0)
    assert lookup.propose([3, 3, 3], 5) == ([3], 2)  # overlapping matches end before the suffix


def test_lookup_windows_are_learnt_per_match_length():
    """A 4-gram match that keeps being right earns long windows while 2-gram guesses that are
    wrong are cut to nothing: each match length has its own controller."""
    planner = WindowPlanner("lookup", None, 8, SimpleNamespace(target=target_ms, draft_ms=0.0), 1, follow_timing=False)
    long_match = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3, 4]  # the suffix 1 2 3 4 occurred: 8 tokens follow
    short_match = [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20, 21, 1, 2]  # only the 2-gram 1 2 occurred
    for _ in range(200):
        for tokens, right in ((long_match, True), (short_match, False)):
            plan = planner.plan(tokens, room=8)
            if plan.source == "lookup":
                planner.observe(plan, len(plan.tokens), len(plan.tokens) if right else 0)
    four, two = planner.plan(long_match, room=8), planner.plan(short_match, room=8)
    assert (four.source, four.match, len(four.tokens)) == ("lookup", 4, 8)
    assert two.source == "none" or (two.match == 2 and len(two.tokens) <= 1)
    by_match = planner.summary()["lookup"]["by_match"]
    assert by_match[4]["acceptance"][0] > 0.9 and by_match[2]["acceptance"][0] < 0.1


def test_with_both_sources_the_window_expected_to_pay_more_goes_first():
    """Auto windows with the model draft and lookup: a step with a lookup guess verifies the
    source whose controller expects more tokens per millisecond, whatever the match length."""
    short_match = [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20, 21, 1, 2]  # only the 2-gram 1 2 occurred
    for lookup_right in (True, False):
        planner = WindowPlanner("both", None, 8, SimpleNamespace(target=target_ms, draft_ms=DRAFT_MS), 1,
                                follow_timing=False)
        sources = []
        for _ in range(200):
            plan = planner.plan(short_match, room=8)
            proposed = len(plan.tokens) if plan.source == "lookup" else plan.gamma
            right = lookup_right if plan.source == "lookup" else not lookup_right
            planner.observe(plan, proposed, proposed if right else 0)
            sources.append(plan.source)
        settled = sources[-50:]
        if lookup_right:
            assert settled.count("lookup") == 50 and planner.plan(short_match, room=8).tokens == short_match[2:10]
        else:
            assert settled.count("model") >= 45  # a guess may still be tried where the model draft pays nothing
