"""Vanilla speculative decoding: draft a window serially, verify it in one target call.

The draft and the target take turns, so on two devices one is always idle: the serial
barrier that Mirror-SD removes. The window comes from the model draft or prompt lookup and
is as long as ``WindowPlanner`` says (fixed, or chosen each step; 0 is a plain target step).
"""

from .ar import prefill
from .draft import Window
from .sampling import point_mass, verify


def generate_sd(target, drafter, planner, seq, decoding, rand, stats, vocab_size: int):
    yield prefill(target, seq, decoding, rand)
    while not seq.done:
        n = len(seq.tokens)
        plan = planner.plan(seq.tokens, seq.window_size(planner.max_gamma))
        draft_seconds, draft_calls = stats.seconds["draft"], stats.serial_draft_calls
        if plan.source == "model":
            window = drafter.propose(seq.tokens, plan.gamma)
        elif plan.source == "lookup":
            window = Window(plan.tokens, [point_mass(t, vocab_size, decoding) for t in plan.tokens])
        else:
            window = Window()
        out = target.score([seq.tokens[-1]] + window.tokens, decoding.greedy, last_only=False)
        accepted, token = verify(window, out, n, decoding, rand)
        target.truncate(n + accepted)
        if drafter is not None:
            drafter.rollback(n, window, accepted)
        stats.accepted_draft_tokens += accepted
        calls = stats.serial_draft_calls - draft_calls
        planner.observe(plan, len(window), accepted,
                        draft_ms_per_call=(stats.seconds["draft"] - draft_seconds) * 1000 / calls if calls else None)
        yield seq.commit(window.tokens[:accepted] + [token])
