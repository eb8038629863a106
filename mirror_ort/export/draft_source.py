"""What ``--draft`` names: one resolver for export, validation and the bench's peers.

``auto`` is the distilled draft packaged for an embedded default model, else the target's
first N/8 layers; ``layers:K`` the target's first K layers; a directory written by
``mirror-ort distill``; anything else a model source sharing the target's tokenizer.
"""

from dataclasses import dataclass
from pathlib import Path

from ..errors import MirrorError
from .draft_dir import is_distilled_draft, packaged_draft


@dataclass(frozen=True)
class DraftChoice:
    kind: str  # "layers", "distilled" or "model"
    spec: str  # what the manifest records as the draft's source
    layers: int | None = None  # kind "layers": K
    path: Path | None = None  # kind "distilled": the draft directory


def resolve_draft(spec: str, source_description: dict, num_layers: int) -> DraftChoice:
    """The draft ``spec`` stands for, for a target with ``num_layers`` layers (bad specs raise)."""
    if spec == "auto":
        packaged = packaged_draft(source_description)
        spec = str(packaged) if packaged else f"layers:{max(1, num_layers // 8)}"
    if spec.startswith("layers:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise MirrorError(f"--draft {spec!r}: expected layers:K with K an integer in 1..{num_layers}") from None
        if not 1 <= k <= num_layers:
            raise MirrorError(f"--draft layers:{k}: K must be in 1..{num_layers} (the target's layer count)")
        return DraftChoice("layers", f"layers:{k}", layers=k)
    if is_distilled_draft(Path(spec)):
        return DraftChoice("distilled", spec, path=Path(spec))
    return DraftChoice("model", spec)


def draft_module(choice: DraftChoice, source, trust_remote_code: bool = False):
    """The PyTorch draft for ``choice`` on the target ``source``, and its manifest facts."""
    from .architectures import arch_spec
    from .draft_dir import load_draft
    from .sources import check_same_vocabulary, load_source
    from .split import Draft
    from .streams import StreamHeads

    if choice.kind == "layers":
        module = Draft(source.model, arch_spec(source.model.config), num_layers=choice.layers)
        return module, {"source": choice.spec, "streams": 0}
    if choice.kind == "distilled":
        module = load_draft(choice.path, source.model)
        streams = module.stream_heads.config["num_streams"] if module.stream_heads is not None else 0
        return module, {"source": choice.spec, "streams": streams}
    draft = load_source(choice.spec, trust_remote_code)
    check_same_vocabulary(source.tokenizer, draft.tokenizer)
    path = Path(choice.spec)
    heads = StreamHeads.load(path) if path.is_dir() else None
    module = Draft(draft.model, arch_spec(draft.model.config), stream_heads=heads)
    return module, {"source": draft.description["source"], "streams": heads.config["num_streams"] if heads else 0}
