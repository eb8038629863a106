"""What the bench measures: rows, and the registry of methods that make them.

A *method* is what the user names in ``--methods``; a *row* is one method under one
thread allocation (``mirror`` and ``mirror/split``), with its sessions or models
loaded. Every row turns the same prompt token ids into token ids and is timed the
same way: the wall time of one whole generation (prefill included) around its call.

A method that cannot run here (a peer whose package is missing, a draft method on a
bundle without a draft) raises ``Skipped`` with the reason; the bench reports it and
goes on. Peers register themselves in the same table (``hf_peer``, ``genai_peer``, ``optimum_peer``);
tests may add their own methods with ``register``.
"""

import time
from dataclasses import dataclass, field

from ..errors import MirrorError
from .alloc import Allocation

# Names that stand for several methods: a peer's plain decoding and its speculative mode.
GROUPS = {"ort-genai": ("ort-genai", "ort-genai-sd"), "hf": ("hf", "hf-assisted")}
BASELINE = "ar"  # the first bundle's shared-allocation ar row: reference of every speedup
PER_MODEL = ("hf", "hf-assisted", "optimum")  # rows that measure the fp32 source, whatever the bundle


class Skipped(Exception):
    """A method that cannot run here; ``str(self)`` says why and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Generation settings, the same for every row."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    gamma: int = 6
    kappa: int | None = None
    max_branches: int = 8

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Generation:
    token_ids: list[int]
    seconds: float
    target_calls: int = 0  # target forward passes, the prompt's included (0: not known)
    reused_windows: int | None = None  # Mirror-SD only
    fallback_windows: int | None = None
    parts: dict | None = None  # mirror-ort rows: seconds per part of the step (run --json's stats)
    cached_prompt_tokens: int = 0  # prompt positions not prefilled (kept from an earlier generation)


@dataclass
class Row:
    name: str
    method: str
    alloc: Allocation
    threads: dict
    runtime: str  # what runs it, e.g. "onnxruntime 1.32.0 cpu"
    notes: list[str] = field(default_factory=list)
    reference: str = BASELINE  # the row whose ids this row's must equal: ar of the same bundle

    def generate(self, ids: list[int], settings: Settings) -> Generation:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"method": self.method, "alloc": self.alloc.mode, "threads": self.threads, "runtime": self.runtime,
                "notes": self.notes, "lossless_reference": self.reference}

    def close(self) -> None:
        pass


class PipelineRow(Row):
    """``ar``, ``sd`` or ``mirror`` through mirror-ort's own Pipeline."""

    def __init__(self, name, method, alloc, pipe, runtime, threads, overrides: dict | None = None):
        super().__init__(name, method, alloc, threads, runtime)
        self.pipe, self.overrides = pipe, overrides or {}

    def generate(self, ids, s: Settings) -> Generation:
        kw = dict(method=self.method, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                  top_k=s.top_k, seed=s.seed, gamma=s.gamma, kappa=s.kappa, max_branches=s.max_branches)
        kw.update(self.overrides)
        self.pipe.forget()  # rows may share a pipeline: each prefills its prompt, like the peers
        start = time.perf_counter()
        result = self.pipe.generate(list(ids), **kw)
        seconds = time.perf_counter() - start
        st = result.stats
        mirror = kw["method"] == "mirror"
        return Generation(result.token_ids, seconds, st.get("target_calls", 0),
                          st.get("reused_windows") if mirror else None, st.get("fallback_windows") if mirror else None,
                          {k: v for k, v in st["seconds"].items() if k != "total"}, st["cached_prompt_tokens"])


def _pipeline_method(method: str):
    def make(ctx, alloc: Allocation) -> Row:
        if method != "ar" and not ctx.bundle.has_draft:
            raise Skipped(f"the bundle has no draft graph, which {method} needs: export it with --draft")
        concurrent = method == "mirror"
        pipe = ctx.pipeline(alloc, spin=alloc.spin(concurrent))
        threads = {"target": alloc.target_threads}
        if method != "ar":
            threads["draft"] = alloc.draft_threads
        threads["spin"] = alloc.spin(concurrent)
        runtime = f"mirror-ort on onnxruntime, target {ctx.target_ep}"
        if method != "ar":
            runtime += f", draft {ctx.draft_ep}"
        return PipelineRow(method + alloc.suffix, method, alloc, pipe, runtime, threads)
    return make


METHODS = {name: _pipeline_method(name) for name in ("ar", "sd", "mirror")}


def register(name: str, make) -> None:
    """Add a method: ``make(context, allocation) -> Row`` (or raise Skipped)."""
    METHODS[name] = make


def known_methods() -> list[str]:
    from . import genai_peer, hf_peer, optimum_peer  # noqa: F401  (they register their methods)

    return list(dict.fromkeys([*METHODS, *GROUPS]))


def parse_methods(text: str) -> list[str]:
    """``ar,sd,mirror,ort-genai,hf`` -> the methods, groups expanded, ``ar`` always first."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise MirrorError("--methods is empty: name at least one of " + ", ".join(known_methods()))
    known = known_methods()
    chosen = []
    for name in names:
        if name not in known:
            raise MirrorError(f"unknown method {name!r} in --methods: choose from {', '.join(known)}")
        chosen += GROUPS.get(name, (name,))
    return list(dict.fromkeys([BASELINE, *chosen]))
