"""What the bench measures: a row is one method under one thread allocation, with its sessions
or models loaded, turning prompt token ids into token ids. Every row is timed the same way:
the wall time of one whole generation (prefill included) around its call.

A method that cannot run here (a peer whose package is missing, a draft method on a bundle
without a draft) raises ``Skipped`` with the reason; the bench reports it and goes on.
"""

from dataclasses import dataclass, field

from ..generation import GenerationConfig
from .alloc import Allocation

BASELINE = "ar"  # the first bundle's shared-allocation ar row: reference of every speedup
PEER_WINDOW = 6  # the peers' draft length when mirror-ort's rows choose theirs (gamma auto)


def peer_window(s: GenerationConfig) -> int:
    """How many tokens a peer's speculative mode drafts per step: --gamma, or PEER_WINDOW with auto."""
    return PEER_WINDOW if s.auto_gamma else s.gamma


class Skipped(Exception):
    """A method that cannot run here; ``str(self)`` says why and how to fix it."""


@dataclass
class Generation:
    token_ids: list[int]
    seconds: float
    target_calls: int = 0  # target forward passes, the prompt's included (0: not known)
    reused_windows: int | None = None  # Mirror-SD only
    fallback_windows: int | None = None
    parts: dict | None = None  # mirror-ort rows: seconds per part of the step (run --json's stats)
    cached_prompt_tokens: int = 0  # prompt positions not prefilled (kept from an earlier generation)
    mean_gamma: float | None = None  # mirror-ort rows: the model windows' mean length (chosen, with gamma auto)


@dataclass
class Row:
    name: str
    method: str
    alloc: Allocation
    threads: dict
    runtime: str  # what runs it, e.g. "onnxruntime 1.32.0 cpu"
    notes: list[str] = field(default_factory=list)
    reference: str = BASELINE  # the row whose ids this row's must equal: ar of the same bundle

    def generate(self, ids: list[int], settings: GenerationConfig) -> Generation:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"method": self.method, "alloc": self.alloc.mode, "threads": self.threads, "runtime": self.runtime,
                "notes": self.notes, "lossless_reference": self.reference}

    def close(self) -> None:
        pass
