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
from dataclasses import dataclass

from .ar import prefill
from .draft import Drafter, Window
from .draft_tree import DraftTree, plan
from .sampling import verify
from .target import ExitMessage

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

    def __init__(self, drafter: Drafter, gamma: int, max_branches: int):
        self.drafter, self.gamma, self.max_branches = drafter, gamma, max_branches
        self.stats = drafter.stats
        self._tasks: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._verdict: Verdict | None = None
        self._verdict_ready = threading.Event()
        self._accepted, self._trials = 1, 2  # per-token acceptance counts (a uniform prior)
        self._thread = threading.Thread(target=self._loop, name="mirror-draft", daemon=True)
        self._thread.start()

    # -- called from the target thread ---------------------------------------------------
    def prefill(self, tokens: list[int]) -> None:
        self._tasks.put(("prefill", list(tokens)))

    def propose(self, committed: list[int]) -> None:
        self._tasks.put(("propose", list(committed)))

    def tree(self, committed_length: int, window: Window, message: ExitMessage) -> None:
        self._verdict_ready.clear()
        self._tasks.put(("tree", (committed_length, window, message)))

    def verdict(self, verdict: Verdict) -> None:
        self._verdict = verdict
        self._verdict_ready.set()

    def window(self) -> Window:
        """The next window; raises what the worker raised."""
        result = self._results.get()
        if isinstance(result, BaseException):
            raise result
        return result

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
                if kind != "prefill":
                    self._results.put(error)
                continue
            try:
                if kind == "prefill":
                    with self.stats.timed("draft"):
                        self.drafter.prefill(payload)
                elif kind == "propose":
                    self._results.put(self.drafter.propose(payload, self.gamma))
                else:
                    window = self._rendezvous(*payload)
                    if window is not None:
                        self._results.put(window)
            except BaseException as e:  # handed to the target thread, which finishes alone
                error = e
                if kind != "prefill":
                    self._results.put(e)

    def _rendezvous(self, n: int, window: Window, message: ExitMessage) -> Window | None:
        acceptance = self._accepted / self._trials
        tree = DraftTree(self.drafter, n, window, plan(window.tokens, message, self.max_branches, acceptance),
                         self.gamma)
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
            self.stats.reused_windows += 1
            return tree.adopt(chosen)
        self.stats.fallback_windows += 1
        tree.abandon(v.accepted)
        return self.drafter.propose(v.committed, self.gamma)


def generate_mirror(target, worker: DraftWorker, seq, decoding, rand, stats, gamma: int, kappa: int):
    worker.prefill(seq.tokens)  # the draft reads the prompt while the target does
    first = prefill(target, seq, decoding, rand)
    yield first
    if seq.done:
        return
    worker.propose(seq.tokens)
    window, failed = _next_window(worker, stats)
    while not seq.done:
        n = len(seq.tokens)
        window = window.head(seq.window_size(gamma))
        hidden, message = target.prefix([seq.tokens[-1]] + window.tokens, kappa)
        stats.target_calls += 1
        if not failed:
            worker.tree(n, window, message)  # the early-exit message
        out = target.suffix(hidden, decoding.greedy)
        accepted, token = verify(window, out, n, decoding, rand)
        target.truncate(n + accepted)
        stats.accepted_draft_tokens += accepted
        kept = seq.commit(window.tokens[:accepted] + [token])
        if not failed:
            worker.verdict(Verdict(accepted, token, list(seq.tokens), seq.done))
        yield kept
        if not seq.done and not failed:
            window, failed = _next_window(worker, stats)


def _next_window(worker: DraftWorker, stats) -> tuple[Window, bool]:
    with stats.timed("wait"):
        try:
            return worker.window(), False
        except Exception as e:
            stats.draft_error = f"{type(e).__name__}: {e}"
            log.warning("the draft failed (%s); finishing with the target alone", stats.draft_error)
            return Window(), True
