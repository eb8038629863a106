"""The methods a user names in ``--methods``, as a lazy table (like ``providers/registry.py``).

Each entry makes a row (``rows.Row``) for a bundle context and an allocation: mirror-ort's own
``ar``, ``sd`` and ``mirror`` through its Pipeline, and the peers a user would otherwise pick,
whose modules are imported only when their row is built. mirror-ort's methods take generation
settings of their own after colons, so one run can set variants side by side:
``sd:gamma=6`` (a fixed window), ``sd:draft=lookup``, ``mirror:gamma=6:max_branches=4``.
"""

import importlib
import time
from dataclasses import asdict

from ..errors import MirrorError
from ..generation import GenerationConfig
from .alloc import Allocation
from .rows import BASELINE, Generation, Row, Skipped

# Names that stand for several methods: a peer's plain decoding and its speculative mode.
GROUPS = {"ort-genai": ("ort-genai", "ort-genai-sd"), "hf": ("hf", "hf-assisted")}
PER_MODEL = ("hf", "hf-assisted", "optimum")  # rows that measure the PyTorch source, whatever the bundle


class PipelineRow(Row):
    """``ar``, ``sd`` or ``mirror`` through mirror-ort's own Pipeline."""

    def __init__(self, name, method, alloc, pipe, runtime, threads, overrides: dict | None = None):
        super().__init__(name, method, alloc, threads, runtime)
        self.pipe, self.overrides = pipe, overrides or {}

    def generate(self, ids, s: GenerationConfig) -> Generation:
        kw = {**asdict(s), **self.overrides, "method": self.method}
        self.pipe.forget()  # rows may share a pipeline: each prefills its prompt, like the peers
        start = time.perf_counter()
        result = self.pipe.generate(list(ids), **kw)
        seconds = time.perf_counter() - start
        st = result.stats
        mirror = kw["method"] == "mirror"
        return Generation(result.token_ids, seconds, st.get("target_calls", 0),
                          st.get("reused_windows") if mirror else None, st.get("fallback_windows") if mirror else None,
                          {k: v for k, v in st["seconds"].items() if k != "total"}, st["cached_prompt_tokens"],
                          (st.get("speculation") or {}).get("mean_model_window"))


def _pipeline_method(method: str, overrides: dict | None = None):
    def make(ctx, alloc: Allocation) -> Row:
        if method != "ar" and not ctx.bundle.has_draft and (overrides or {}).get("draft") not in ("lookup", "auto"):
            raise Skipped(f"the bundle has no draft graph, which {method} needs: export it with --draft, "
                          f"or name {method}:draft=lookup")
        # Mirror-SD's target and draft run at the same time when it builds trees: always with a fixed
        # gamma, with gamma auto only when the draft has cores of its own (runtime/mirror.py TreeBudget)
        concurrent = method == "mirror" and not ctx.settings.updated(**(overrides or {})).auto_gamma
        pipe = ctx.pipeline(alloc, spin=alloc.spin(concurrent))
        threads = {"target": alloc.target_threads}
        if method != "ar":
            threads["draft"] = alloc.draft_threads
        threads["spin"] = alloc.spin(concurrent)
        runtime = f"mirror-ort on onnxruntime, target {ctx.target_ep}"
        if method != "ar":
            runtime += f", draft {ctx.draft_ep}"
        if method != "ar" and ctx.settings.updated(**(overrides or {})).auto_gamma:
            pipe.cost_curve()  # measured (or read from the cache) now, not inside a timed generation
        if overrides:
            pipe.settings(method=method, **overrides)  # a bad setting is refused before the run
        return PipelineRow(method + alloc.suffix, method, alloc, pipe, runtime, threads, overrides)
    return make


def variant(spec: str):
    """``sd:gamma=6:draft=lookup`` -> (``sd``, {"gamma": 6, "draft": "lookup"}); plain names have no settings."""
    method, *settings = spec.split(":")
    overrides = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MirrorError(f"--methods {spec!r}: write settings as method:key=value, e.g. sd:gamma=6")
        overrides[key] = int(value) if value.lstrip("-").isdigit() else value
    if overrides and method not in ("ar", "sd", "mirror"):
        raise MirrorError(f"--methods {spec!r}: only ar, sd and mirror take settings")
    return method, overrides


def _peer(module: str, factory: str, *args):
    """A peer's row maker, imported from ``bench/<module>.py`` when the row is built."""
    def make(ctx, alloc: Allocation) -> Row:
        return getattr(importlib.import_module(f"{__package__}.{module}"), factory)(*args)(ctx, alloc)
    return make


# method -> make(context, allocation) -> Row (or raise Skipped)
METHODS = {
    **{name: _pipeline_method(name) for name in ("ar", "sd", "mirror")},
    "ort-genai": _peer("genai_peer", "genai_row", False),
    "ort-genai-sd": _peer("genai_peer", "genai_row", True),
    "hf": _peer("hf_peer", "hf_row", False),
    "hf-assisted": _peer("hf_peer", "hf_row", True),
    "optimum": _peer("optimum_peer", "optimum_row"),
}


def known_methods() -> list[str]:
    return list(dict.fromkeys([*METHODS, *GROUPS]))


def make_row(spec: str, ctx, alloc: Allocation) -> Row:
    """The row for a method name or variant (``sd:gamma=6``)."""
    method, overrides = variant(spec)
    return _pipeline_method(method, overrides)(ctx, alloc) if overrides else METHODS[method](ctx, alloc)


def parse_methods(text: str) -> list[str]:
    """``ar,sd,mirror,ort-genai,hf`` -> the methods, groups expanded, ``ar`` always first."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise MirrorError("--methods is empty: name at least one of " + ", ".join(known_methods()))
    known = known_methods()
    chosen = []
    for name in names:
        method, _ = variant(name)
        if method not in known:
            raise MirrorError(f"unknown method {method!r} in --methods: choose from {', '.join(known)}")
        chosen += GROUPS.get(name, (name,))
    return list(dict.fromkeys([BASELINE, *chosen]))
