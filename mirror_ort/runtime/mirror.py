"""Mirror-SD: the target and the draft run at the same time, each on its own thread and device.

One step t, as in the paper:
1. Target prefix over [pending token, window]; the early-exit message (Top-kappa
   ids and log-probs per position) goes to the draft worker.
2. In parallel: the target suffix decides acceptance (A, c) while the draft worker
   rolls out the draft tree (``draft_tree``) for the likely outcomes.
3. Rendezvous: if (A, c) is a branch of the tree its rollout is the next window
   (reuse); otherwise the worker drafts it afresh (fallback).
Only token ids and log-probs cross between the threads, never hidden states.
The output is the target's own: every committed token was verified against the
suffix's distribution.

If the draft worker fails (a provider error, a bad output), the failure is
reported once in the stats and the log, and the generation finishes with the target alone.
A generation's worker is joined before the next generation starts: no draft call of an
earlier run ever writes into the draft cache of a later one.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass

from .ar import prefill
from .draft import Drafter, Window
from .draft_tree import DraftTree, plan
from .sampling import point_mass, verify
from .target import ExitMessage
from .window import Plan

log = logging.getLogger("mirror_ort")


@dataclass
class Verdict:
    accepted: int
    token: int
    committed: list[int]
    done: bool


class DraftWorker:
    """The draft's thread. It owns the draft session and cache; the target thread sends it
    work and verdicts and waits for windows (events and queues, no polling)."""

    def __init__(self, drafter: Drafter):
        self.drafter = drafter
        self.stats = drafter.stats
        self._tasks: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._verdict: Verdict | None = None
        self._verdict_ready = threading.Event()
        self._unwanted = 0  # windows still to come that the target thread will not take
        self._accepted, self._trials = 1, 2  # per-token acceptance counts (a uniform prior)
        self._thread = threading.Thread(target=self._loop, name="mirror-draft", daemon=True)
        self._thread.start()

    # -- called from the target thread ---------------------------------------------------
    def prefill(self, tokens: list[int]) -> None:
        self._tasks.put(("prefill", list(tokens)))

    def propose(self, committed: list[int], depth: int) -> None:
        self._tasks.put(("propose", (list(committed), depth)))

    def tree(self, committed_length: int, window: Window, message: ExitMessage, branches: int, depth: int) -> None:
        """Roll out ``branches`` outcomes of this step, ``depth`` tokens deep (the next window)."""
        self._verdict_ready.clear()
        self._tasks.put(("tree", (committed_length, window, message, branches, depth)))

    def forget(self, length: int, owed: bool = False) -> None:
        """A window the worker made (or, ``owed``, is still making) will not be verified: keep only
        the cache of ``length`` committed tokens."""
        if owed:
            self._unwanted += 1
        self._tasks.put(("truncate", length))

    def verdict(self, verdict: Verdict) -> None:
        self._verdict = verdict
        self._verdict_ready.set()

    def window(self) -> Window:
        """The next window wanted; raises what the worker raised (also while making an unwanted one).
        A tree's window counts as reused or fallback here, when it is taken."""
        while True:
            result = self._results.get()
            if isinstance(result, BaseException):
                raise result
            if self._unwanted:
                self._unwanted -= 1
                continue
            window, reused = result
            if reused is not None:
                self.stats.reused_windows += reused
                self.stats.fallback_windows += not reused
            return window

    def close(self) -> None:
        """Stop the worker and wait for it: it ends after the draft call in progress, if any."""
        self.verdict(Verdict(0, 0, [], done=True))
        self._tasks.put(None)
        self._thread.join()

    # -- the worker thread -----------------------------------------------------------------
    def _loop(self) -> None:
        error = None  # after a failure every request for a window gets the failure
        while (task := self._tasks.get()) is not None:
            kind, payload = task
            if error is not None:
                if kind in ("propose", "tree"):
                    self._results.put(error)
                continue
            try:
                if kind == "prefill":
                    with self.stats.timed("draft"):
                        self.drafter.prefill(payload)
                elif kind == "truncate":
                    self.drafter.cache.truncate(payload)
                elif kind == "propose":
                    self._results.put((self.drafter.propose(*payload), None))
                else:
                    result = self._rendezvous(*payload)
                    if result is not None:
                        self._results.put(result)
            except BaseException as e:  # handed to the target thread, which finishes alone
                error = e
                if kind in ("propose", "tree"):
                    self._results.put(e)

    def _rendezvous(self, n: int, window: Window, message: ExitMessage, branches: int,
                    depth: int) -> tuple[Window, bool] | None:
        """The next window and whether the tree held it (None: the generation ended)."""
        acceptance = self._accepted / self._trials
        tree = DraftTree(self.drafter, n, window, plan(window.tokens, message, branches, acceptance), depth)
        self.stats.tree_branches += len(tree.active)
        chosen, pruned = None, False
        with self.stats.timed("draft_tree"):
            while tree.active and not tree.finished:
                if self._verdict_ready.is_set() and not pruned:
                    if self._verdict.done:
                        return None
                    chosen, pruned = tree.prune(self._verdict.accepted, self._verdict.token), True
                    continue
                tree.level()
        self._verdict_ready.wait()
        v = self._verdict
        if v.done:
            return None
        self._accepted += v.accepted
        self._trials += v.accepted + (v.accepted < len(window))
        chosen = chosen if pruned else tree.prune(v.accepted, v.token)
        if chosen is not None:
            return tree.adopt(chosen), True
        tree.abandon(v.accepted)
        return self.drafter.propose(v.committed, depth), False


def generate_mirror(target, worker: DraftWorker, planner, seq, decoding, rand, stats, kappa: int, vocab_size: int,
                    tree: "TreeBudget"):
    """Mirror-SD steps. A model window comes from the worker (the tree's branch for what the
    target decided, or a fresh proposal); a lookup window or a plain step needs no tree, and
    a step whose tree would not fit the draft's idle time sends no early-exit message."""
    if tree.builds_trees:  # else the draft reads the prompt with its first proposal, not on the target's cores
        worker.prefill(seq.tokens)  # the draft reads the prompt while the target does
    first = prefill(target, seq, decoding, rand)
    yield first
    owed, failed = False, False  # owed: the worker is making the window after the last verdict
    while not seq.done:
        n = len(seq.tokens)
        started = time.perf_counter()
        plan = planner.plan(seq.tokens, seq.window_size(planner.max_gamma))
        if plan.source == "model" and failed:
            plan = Plan("none", 0)
        if plan.source == "model":
            if not owed:
                worker.propose(seq.tokens, plan.gamma)
            ready, failed = _next_window(worker, stats)  # waited for only now: a step that needs it
            window = ready.head(plan.gamma)
        else:
            if owed:
                worker.forget(n, owed=True)  # its rollout stays unverified
            window = (Window(plan.tokens, [point_mass(t, vocab_size, decoding) for t in plan.tokens])
                      if plan.source == "lookup" else Window())
        model_window = plan.source == "model" and not failed
        branches = tree.branches(len(window) + 1, stats) if model_window else 0
        tokens = [seq.tokens[-1]] + window.tokens
        if branches:
            hidden, message = target.prefix(tokens, kappa)
            stats.target_calls += 1
            worker.tree(n, window, message, branches, plan.gamma)  # the early-exit message
            out = target.suffix(hidden, decoding.greedy)
        else:  # no tree: nothing to send at l_e, the whole target in one call
            out = target.score(tokens, decoding.greedy, last_only=False)
        accepted, token = verify(window, out, n, decoding, rand)
        target.truncate(n + accepted)
        stats.accepted_draft_tokens += accepted
        kept = seq.commit(window.tokens[:accepted] + [token])
        owed = bool(branches)
        if branches:
            worker.verdict(Verdict(accepted, token, list(seq.tokens), seq.done))
        elif model_window:
            worker.forget(n + accepted)  # a window without a tree: keep what the target confirmed
        planner.observe(plan, len(window), accepted,
                        overhead_ms=(time.perf_counter() - started) * 1000 - tree.target_ms(len(window) + 1))
        yield kept


class TreeBudget:
    """How wide the draft tree may be: as many branches as finish while the draft's device is
    idle, within the target's suffix (from the cost curve), halved while reuse stays low. A draft
    that shares the target's cores has no idle time (``idle_share`` 0): its tree would slow the
    suffix it hides behind, so it builds none and drafts after the verdict, as ``sd`` does.
    Without a cost curve (a fixed gamma) the tree is always ``max_branches`` wide."""

    def __init__(self, curve, idle_share: float, levels_per_token: float, max_branches: int):
        self.curve, self.idle_share, self.levels_per_token = curve, idle_share, levels_per_token
        self.max_branches = max_branches
        self.chosen: list[int] = []

    @property
    def builds_trees(self) -> bool:
        """Will the draft work while the target does? (Else it only ever runs between target steps.)"""
        return self.curve is None or not self.curve.tree_ms or self.idle_share > 0

    def target_ms(self, rows: int) -> float:
        return self.curve.target(rows) if self.curve is not None else 0.0

    def branches(self, rows: int, stats) -> int:
        if not self.builds_trees:
            chosen = 0
        elif self.curve is None or not self.curve.tree_ms:
            chosen = self.max_branches
        else:
            budget = self.curve.target(rows) * self.idle_share
            levels = max(1.0, (rows - 1) * self.levels_per_token)
            fits = [b for b in range(1, self.max_branches + 1) if levels * self.curve.tree_level(b) <= budget]
            chosen = max(fits, default=1)
            windows = stats.reused_windows + stats.fallback_windows
            if windows >= LOW_REUSE_AFTER and stats.reused_windows < LOW_REUSE * windows:
                chosen = max(1, chosen // 2)
        self.chosen.append(chosen)
        return chosen

    def summary(self) -> dict:
        return {"mean_branches": sum(self.chosen) / len(self.chosen) if self.chosen else 0.0,
                "tree_idle_share": round(self.idle_share, 3)}


LOW_REUSE, LOW_REUSE_AFTER = 0.25, 8  # reuse below 25% after 8 trees: a narrower tree
def _next_window(worker: DraftWorker, stats) -> tuple[Window, bool]:
    with stats.timed("wait"):
        try:
            return worker.window(), False
        except Exception as e:
            stats.draft_error = f"{type(e).__name__}: {e}"
            log.warning("the draft failed (%s); finishing with the target alone", stats.draft_error)
            return Window(), True
