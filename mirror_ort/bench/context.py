"""What the rows of one bench share: the bundle, its sessions per allocation, the peers' models."""

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
    _pipelines: dict = field(default_factory=dict)
    _peers: object = None

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

    def any_pipeline(self):
        """A pipeline for tokenizing prompts (any allocation will do)."""
        if self._pipelines:
            return next(iter(self._pipelines.values()))
        from .alloc import allocation

        return self.pipeline(allocation("shared"))

    @property
    def peers(self):
        """The bundle's target and draft as PyTorch models, loaded on first use."""
        if self._peers is None:
            from .peer_models import PeerModels

            self._peers = PeerModels(self.bundle, log=self.log)
        return self._peers
