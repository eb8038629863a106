"""What the rows of one bundle share: the bundle, its sessions per allocation, the peers' models."""

from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import Bundle
from ..providers import ProviderChoice
from .alloc import Allocation


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mirror-ort"


@dataclass
class Context:
    bundle: Bundle
    target_ep: ProviderChoice
    draft_ep: ProviderChoice
    max_length: int | None = None
    allow_cpu_fallback: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    genai_precision: str = "fp32"
    log: object = print
    tag: str = ""  # row-name suffix: "" for the first bundle, "@int4" (its precision) for another
    settings: object = None  # the run's GenerationConfig (rows may vary it: methods.variant)
    peer_cache: dict = field(default_factory=dict)  # PyTorch models by source, shared between contexts
    _pipelines: dict = field(default_factory=dict)

    def pipeline(self, alloc: Allocation, spin: bool | None = None):
        """One Pipeline per (target threads, draft threads, spin): rows that agree share it."""
        from ..runtime.pipeline import Pipeline

        key = (alloc.target_threads, alloc.draft_threads, spin)
        if key not in self._pipelines:
            self._pipelines[key] = Pipeline.from_bundle(
                self.bundle.path, target_ep=self.target_ep, draft_ep=self.draft_ep,
                target_threads=alloc.target_threads, draft_threads=alloc.draft_threads, max_length=self.max_length,
                allow_cpu_fallback=self.allow_cpu_fallback, load_draft=self.bundle.has_draft, spin=spin)
        return self._pipelines[key]

    def cost_curves(self) -> dict:
        """The cost curves the rows' pipelines measured (``gamma=auto``), by threads."""
        return {f"target {t} / draft {d} threads{', no spinning' if spin is False else ''}{self.tag}": pipe._curve.as_dict()
                for (t, d, spin), pipe in self._pipelines.items() if pipe._curve is not None}

    def any_pipeline(self):
        """A pipeline for tokenizing prompts (any allocation will do)."""
        if self._pipelines:
            return next(iter(self._pipelines.values()))
        from .alloc import allocation

        return self.pipeline(allocation("shared"))

    @property
    def precision(self) -> str:
        """The target's precision in this bundle."""
        return self.bundle.precision

    @property
    def peers(self):
        """The bundle's target and draft as PyTorch models, loaded on first use (once per source)."""
        from .peer_models import PeerModels

        key = (self.bundle.source, self.bundle.graph("draft").source if self.bundle.has_draft else None)
        if key not in self.peer_cache:
            self.peer_cache[key] = PeerModels(self.bundle, log=self.log)
        return self.peer_cache[key]
